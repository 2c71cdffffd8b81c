//! The llguidance token environment of our tokenizer: each id's bytes (special tokens as
//! `0xFF` + their text, as toktrie marks them), built once per model, and the JSON grammars
//! compiled from it.

use std::sync::Arc;

use gpt_engine::harmony::FormatTokens;
use gpt_engine::tokenizer::Tokenizer;
use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};

use super::schema::bound_schema;

/// Why a guide could not be built.
#[derive(Debug, thiserror::Error)]
pub enum GuideError {
    /// The tokenizer lacks a harmony token.
    #[error("the tokenizer lacks a harmony token: {0}")]
    Harmony(String),
    /// llguidance refused the token environment.
    #[error("building the constrained-decoding environment: {0}")]
    Env(String),
    /// A schema llguidance cannot compile.
    #[error("the JSON schema cannot be used: {0}")]
    Schema(String),
    /// Tokenizing a forced header failed.
    #[error("tokenizing {text:?}: {message}")]
    Tokenize {
        /// What.
        text: String,
        /// Why.
        message: String,
    },
}

/// What every guide of one model shares.
pub struct GuideEnv {
    /// The tokenizer.
    pub tok: Arc<Tokenizer>,
    /// Harmony formatting ids.
    pub fmt: FormatTokens,
    /// Every special (control) id: never allowed inside constrained or free text bodies.
    pub specials: Vec<u32>,
    factory: ParserFactory,
}

impl std::fmt::Debug for GuideEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuideEnv")
            .field("specials", &self.specials.len())
            .finish()
    }
}

impl GuideEnv {
    /// Builds the environment of `tok` (a fraction of a second for 200k tokens).
    pub fn new(tok: Arc<Tokenizer>) -> Result<Self, GuideError> {
        let fmt =
            FormatTokens::from_tokenizer(&tok).map_err(|e| GuideError::Harmony(e.to_string()))?;
        let n = tok.vocab_size();
        let mut words = Vec::with_capacity(n);
        let mut specials = Vec::new();
        for id in 0..n as u32 {
            let bytes = tok.token_bytes(id).unwrap_or_default();
            if tok.is_special(id) || bytes.is_empty() {
                specials.push(id);
                let name = tok
                    .id_to_token(id)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("<[{id}]>"));
                let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                w.extend_from_slice(name.as_bytes());
                words.push(w);
            } else {
                words.push(bytes.to_vec());
            }
        }
        let info = TokRxInfo::new(n as u32, fmt.ret);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GuideError::Env(e.to_string()))?;
        factory.quiet();
        Ok(Self {
            tok,
            fmt,
            specials,
            factory,
        })
    }

    /// The vocabulary size.
    pub fn vocab(&self) -> usize {
        self.tok.vocab_size()
    }

    /// The grammar of a compact JSON value matching `schema` (bounded: see
    /// [`bound_schema`]); `strict: false` tolerates keywords llguidance does not know.
    pub fn json_grammar(
        &self,
        schema: &Value,
        strict: bool,
    ) -> Result<TopLevelGrammar, GuideError> {
        let mut s = bound_schema(schema);
        if let Value::Object(o) = &mut s {
            o.insert(
                "x-guidance".into(),
                json!({
                    "whitespace_flexible": false,
                    "item_separator": ",",
                    "key_separator": ":",
                    "lenient": !strict,
                }),
            );
        } else if s == Value::Bool(true) {
            return self.json_grammar(&json!({}), strict);
        }
        let g = TopLevelGrammar::from_json_schema(s);
        // Compile once now, so that a bad schema is the request's error.
        self.matcher(&g)?;
        Ok(g)
    }

    /// A fresh matcher of `grammar`.
    pub fn matcher(&self, grammar: &TopLevelGrammar) -> Result<Matcher, GuideError> {
        let parser = self
            .factory
            .create_parser(grammar.clone())
            .map_err(|e| GuideError::Schema(e.to_string()))?;
        let m = Matcher::new(Ok(parser));
        match m.get_error() {
            Some(e) => Err(GuideError::Schema(e)),
            None => Ok(m),
        }
    }

    /// Ids of `text`, special tokens parsed.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, GuideError> {
        self.tok
            .encode(text, true)
            .map_err(|e| GuideError::Tokenize {
                text: text.into(),
                message: e.to_string(),
            })
    }
}
