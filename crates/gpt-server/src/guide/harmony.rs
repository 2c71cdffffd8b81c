//! [`HarmonyGuide`]: the [`TokenGuide`] that walks a harmony completion message by message,
//! forcing the allowed headers token by token, keeping special tokens out of text bodies,
//! matching JSON bodies with llguidance, and ending the analysis when its budget is spent
//! (`<|end|><|start|>assistant<|channel|>final<|message|>` forced by masking).
//!
//! A guide that loses track (a token it did not allow was sampled anyway) stops masking:
//! generation then goes on unconstrained, and the lenient parser reads what was written.

use gpt_engine::engine::TokenGuide;
use llguidance::Matcher;

use super::env::GuideError;
use super::plan::{GuidePlan, Opens};

enum Body {
    Analysis,
    /// Free text ended by `terminator` (`<|return|>` for a final answer, `<|end|>` for a
    /// preamble).
    Text {
        terminator: u32,
    },
    Json {
        matcher: Box<Matcher>,
        terminator: u32,
        broken: bool,
    },
}

enum State {
    /// Constrained: one of these id sequences comes next.
    Alts {
        seqs: Vec<(Vec<u32>, Opens)>,
        pos: usize,
    },
    /// Unconstrained header: its ids so far.
    FreeHeader(Vec<u32>),
    /// Unconstrained, between messages.
    FreeBetween,
    Body(Body),
    Done,
    /// Lost track: no more masking.
    Off,
}

/// The guide of one choice.
pub struct HarmonyGuide {
    plan: GuidePlan,
    state: State,
    analysis_tokens: usize,
    constrained: bool,
    preamble: bool,
}

impl HarmonyGuide {
    /// A guide for a completion after `<|start|>assistant`; with `prefilled_final` the prompt
    /// already ends in `<|channel|>final<|message|>`.
    pub fn new(plan: GuidePlan, prefilled_final: bool) -> Result<Self, GuideError> {
        let mut g = Self {
            constrained: plan.constrain_headers,
            preamble: plan.preamble,
            plan,
            state: State::Done,
            analysis_tokens: 0,
        };
        g.state = if prefilled_final {
            State::Body(g.final_body()?)
        } else if g.constrained {
            State::Alts {
                seqs: g.plan.headers(true)?,
                pos: 0,
            }
        } else {
            State::FreeHeader(Vec::new())
        };
        Ok(g)
    }

    fn final_body(&self) -> Result<Body, GuideError> {
        let ret = self.plan.env.fmt.ret;
        Ok(match &self.plan.final_grammar {
            Some(g) => Body::Json {
                matcher: Box::new(self.plan.env.matcher(g)?),
                terminator: ret,
                broken: false,
            },
            None => Body::Text { terminator: ret },
        })
    }

    fn open(&mut self, opens: Opens) -> Result<State, GuideError> {
        let fmt = self.plan.env.fmt;
        Ok(State::Body(match opens {
            Opens::Analysis => Body::Analysis,
            Opens::Final => self.final_body()?,
            Opens::Preamble => {
                self.preamble = false;
                Body::Text {
                    terminator: fmt.end,
                }
            }
            Opens::Call(k) => Body::Json {
                matcher: Box::new(self.plan.env.matcher(&self.plan.calls[k].grammar)?),
                terminator: fmt.call,
                broken: false,
            },
        }))
    }

    /// The next message's header alternatives, after `prefix` (e.g. `<|end|>`).
    fn next_message(&mut self, prefix: &[u32]) -> Result<State, GuideError> {
        self.constrained = true;
        let restart = self.plan.restart()?;
        let mut plan = self.plan.clone();
        plan.preamble = self.preamble;
        let seqs = plan
            .headers(false)?
            .into_iter()
            .map(|(ids, o)| {
                let mut s = prefix.to_vec();
                s.extend_from_slice(&restart);
                s.extend(ids);
                (s, o)
            })
            .collect();
        Ok(State::Alts { seqs, pos: 0 })
    }

    fn budget_spent(&self) -> bool {
        self.plan.budget.is_some_and(|b| self.analysis_tokens >= b)
    }

    fn step(&mut self, token: u32) -> Result<State, GuideError> {
        let fmt = self.plan.env.fmt;
        let state = std::mem::replace(&mut self.state, State::Off);
        Ok(match state {
            State::Alts { mut seqs, pos } => {
                seqs.retain(|(s, _)| s.get(pos) == Some(&token));
                if let Some(&(_, o)) = seqs.iter().find(|(s, _)| s.len() == pos + 1) {
                    self.open(o)?
                } else if seqs.is_empty() {
                    State::Off
                } else {
                    State::Alts { seqs, pos: pos + 1 }
                }
            }
            State::FreeHeader(mut ids) => {
                if token == fmt.message {
                    let header = self.plan.env.tok.decode(&ids).unwrap_or_default();
                    if header.contains("analysis") {
                        State::Body(Body::Analysis)
                    } else {
                        State::Body(Body::Text {
                            terminator: fmt.ret,
                        })
                    }
                } else if fmt.ends_message(token) {
                    State::FreeBetween
                } else {
                    ids.push(token);
                    State::FreeHeader(ids)
                }
            }
            State::FreeBetween if token == fmt.start => State::FreeHeader(Vec::new()),
            State::FreeBetween => State::FreeBetween,
            State::Body(Body::Analysis) => {
                if token == fmt.end {
                    if self.constrained {
                        self.next_message(&[])?
                    } else {
                        State::FreeBetween
                    }
                } else if token == fmt.ret || token == fmt.call {
                    State::Done
                } else {
                    self.analysis_tokens += 1;
                    if self.budget_spent() {
                        self.next_message(&[fmt.end])?
                    } else {
                        State::Body(Body::Analysis)
                    }
                }
            }
            State::Body(Body::Text { terminator }) => {
                if token == fmt.ret || token == fmt.call {
                    State::Done
                } else if token == fmt.end {
                    if self.constrained || terminator == fmt.end {
                        self.next_message(&[])?
                    } else {
                        State::FreeBetween
                    }
                } else {
                    State::Body(Body::Text { terminator })
                }
            }
            State::Body(Body::Json {
                mut matcher,
                terminator,
                mut broken,
            }) => {
                if token == terminator || fmt.ends_message(token) {
                    State::Done
                } else {
                    if broken || matcher.consume_token(token).is_err() {
                        broken = true;
                    }
                    State::Body(Body::Json {
                        matcher,
                        terminator,
                        broken,
                    })
                }
            }
            State::Done => State::Done,
            State::Off => State::Off,
        })
    }
}

/// Keeps only `allowed` (ids below `logits.len()`).
fn keep_only(logits: &mut [f32], allowed: &[u32]) {
    let saved: Vec<(usize, f32)> = allowed
        .iter()
        .map(|&i| i as usize)
        .filter(|&i| i < logits.len())
        .map(|i| (i, logits[i]))
        .collect();
    logits.fill(f32::NEG_INFINITY);
    for (i, v) in saved {
        logits[i] = v;
    }
}

impl HarmonyGuide {
    fn mask_specials(&self, logits: &mut [f32], except: u32) {
        let vocab = self.plan.env.vocab();
        for &s in &self.plan.env.specials {
            if s != except {
                if let Some(l) = logits.get_mut(s as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        for l in logits.iter_mut().skip(vocab) {
            *l = f32::NEG_INFINITY;
        }
    }
}

impl TokenGuide for HarmonyGuide {
    fn mask(&mut self, logits: &mut [f32]) {
        let fmt = self.plan.env.fmt;
        let vocab = self.plan.env.vocab();
        match &mut self.state {
            State::Alts { seqs, pos } => {
                let mut allowed: Vec<u32> = seqs
                    .iter()
                    .filter_map(|(s, _)| s.get(*pos).copied())
                    .collect();
                if allowed.is_empty() {
                    allowed.push(fmt.ret);
                }
                keep_only(logits, &allowed);
            }
            State::FreeHeader(_) | State::FreeBetween | State::Off => {}
            State::Body(Body::Analysis) if self.constrained => self.mask_specials(logits, fmt.end),
            State::Body(Body::Analysis) => {}
            State::Body(Body::Text { terminator }) => {
                if self.constrained || *terminator == fmt.end {
                    let t = *terminator;
                    self.mask_specials(logits, t);
                }
            }
            State::Body(Body::Json {
                matcher,
                terminator,
                broken,
            }) => {
                let t = *terminator;
                let mask = if *broken {
                    None
                } else {
                    matcher.compute_mask().ok()
                };
                let Some(mask) = mask else {
                    keep_only(logits, &[t]);
                    return;
                };
                let accepting = matcher.is_accepting().unwrap_or(false);
                let mut any = false;
                for (i, l) in logits.iter_mut().enumerate() {
                    if i >= vocab || !mask.is_allowed(i as u32) {
                        *l = f32::NEG_INFINITY;
                    } else {
                        any = true;
                    }
                }
                let keep_t = logits.get(t as usize).copied();
                self.mask_specials(logits, u32::MAX);
                if accepting || !any {
                    if let (Some(l), Some(v)) = (logits.get_mut(t as usize), keep_t) {
                        *l = if v.is_finite() { v } else { 0.0 };
                    }
                }
            }
            State::Done => keep_only(logits, &[fmt.ret, fmt.call]),
        }
    }

    fn accept(&mut self, token: u32) {
        match self.step(token) {
            Ok(s) => self.state = s,
            Err(e) => {
                tracing::warn!(error = %e, "constrained decoding lost track; unconstrained from here");
                self.state = State::Off;
            }
        }
    }
}
