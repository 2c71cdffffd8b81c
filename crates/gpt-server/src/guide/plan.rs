//! What one request constrains, decided once per request ([`GuidePlan`]) and turned into a
//! fresh [`HarmonyGuide`](super::HarmonyGuide) for each choice.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;

use super::env::{GuideEnv, GuideError};

/// A tool the model may call, with the grammar of its arguments.
#[derive(Clone)]
pub struct CallSpec {
    /// Function name.
    pub name: String,
    /// Grammar of the arguments (JSON).
    pub grammar: TopLevelGrammar,
}

/// What kind of message a header opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opens {
    /// `analysis`.
    Analysis,
    /// `final`.
    Final,
    /// A `commentary` preamble.
    Preamble,
    /// A call of tool `k`.
    Call(usize),
}

/// The constraints of one request.
#[derive(Clone)]
pub struct GuidePlan {
    /// Shared environment.
    pub env: Arc<GuideEnv>,
    /// An analysis message may be written.
    pub reasoning: bool,
    /// Most analysis tokens, then the answer is forced.
    pub budget: Option<usize>,
    /// Headers are constrained to the allowed kinds (else only after the budget ends).
    pub constrain_headers: bool,
    /// A final answer may be written (false when a call is required).
    pub final_allowed: bool,
    /// Grammar of the final answer (`response_format`).
    pub final_grammar: Option<TopLevelGrammar>,
    /// A preamble may be written before a call.
    pub preamble: bool,
    /// The tools that may be called.
    pub calls: Vec<CallSpec>,
}

impl std::fmt::Debug for GuidePlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuidePlan")
            .field("reasoning", &self.reasoning)
            .field("budget", &self.budget)
            .field("constrain_headers", &self.constrain_headers)
            .field("final_allowed", &self.final_allowed)
            .field("final_json", &self.final_grammar.is_some())
            .field("preamble", &self.preamble)
            .field(
                "calls",
                &self
                    .calls
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl GuidePlan {
    /// Header alternatives: the ids of `<|channel|>… <|message|>` for each kind allowed now.
    pub fn headers(&self, analysis: bool) -> Result<Vec<(Vec<u32>, Opens)>, GuideError> {
        let mut out = Vec::new();
        if analysis && self.reasoning {
            out.push((
                self.env.encode("<|channel|>analysis<|message|>")?,
                Opens::Analysis,
            ));
        }
        if self.final_allowed {
            out.push((
                self.env.encode("<|channel|>final<|message|>")?,
                Opens::Final,
            ));
        }
        if self.preamble && !self.calls.is_empty() {
            out.push((
                self.env.encode("<|channel|>commentary<|message|>")?,
                Opens::Preamble,
            ));
        }
        for (k, c) in self.calls.iter().enumerate() {
            let text = format!(
                "<|channel|>commentary to=functions.{} <|constrain|>json<|message|>",
                c.name
            );
            out.push((self.env.encode(&text)?, Opens::Call(k)));
        }
        Ok(out)
    }

    /// Ids of `<|start|>assistant`, the start of a later message.
    pub fn restart(&self) -> Result<Vec<u32>, GuideError> {
        self.env.encode("<|start|>assistant")
    }
}
