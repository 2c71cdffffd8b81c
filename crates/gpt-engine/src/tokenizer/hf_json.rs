//! Loading a Hugging Face `tokenizer.json` (byte-level BPE) into a [`Vocab`].

use std::path::Path;

use serde_json::Value;

use super::pretokenize::O200K_PATTERN;
use super::vocab::token_type;
use super::{Result, Tokenizer, TokenizerError, Vocab};

impl Tokenizer {
    /// Reads a HF `tokenizer.json` whose model is byte-level BPE and whose
    /// pre-tokenizer (if it has a `Split` regex) is the o200k pattern.
    ///
    /// Ids missing from both `model.vocab` and `added_tokens` become
    /// `[PAD<id>]` (UNUSED); added tokens are CONTROL when `special`, else
    /// USER_DEFINED. bos/eos/pad are looked up as `<|startoftext|>`,
    /// `<|return|>` (else `<|endoftext|>`) and `<|endoftext|>`.
    pub fn from_tokenizer_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let err = |reason: String| TokenizerError::TokenizerJson {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
        let vocab = vocab_from_tokenizer_json(&json).map_err(err)?;
        Self::from_vocab(&vocab)
    }
}

/// Converts parsed `tokenizer.json` content to a [`Vocab`]; errors are messages.
pub fn vocab_from_tokenizer_json(json: &Value) -> std::result::Result<Vocab, String> {
    let model = json.get("model").ok_or("no `model`")?;
    if let Some(ty) = model.get("type").and_then(Value::as_str) {
        if ty != "BPE" {
            return Err(format!("model type {ty:?} is not BPE"));
        }
    }
    if let Some(pattern) = find_split_pattern(json.get("pre_tokenizer")) {
        if pattern != O200K_PATTERN {
            return Err(format!(
                "pre-tokenizer regex is not the o200k pattern: {pattern:?}"
            ));
        }
    }
    let vocab_map = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or("no `model.vocab` object")?;
    let mut entries: Vec<(u32, String, i32)> = Vec::with_capacity(vocab_map.len());
    for (tok, id) in vocab_map {
        let id = id
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| format!("vocab id of {tok:?} is not a u32"))?;
        entries.push((id, tok.clone(), token_type::NORMAL));
    }
    if let Some(added) = json.get("added_tokens").and_then(Value::as_array) {
        for a in added {
            let id = a
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or("added token without a u32 `id`")?;
            let content = a
                .get("content")
                .and_then(Value::as_str)
                .ok_or("added token without `content`")?;
            let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
            let ty = if special {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            };
            entries.retain(|(i, _, _)| *i != id);
            entries.push((id, content.to_string(), ty));
        }
    }
    let size = entries.iter().map(|e| e.0 as usize + 1).max().unwrap_or(0);
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; size];
    for (id, tok, ty) in entries {
        if tokens[id as usize].is_some() {
            return Err(format!("id {id} is assigned twice"));
        }
        tokens[id as usize] = Some((tok, ty));
    }
    let (tokens, token_types): (Vec<String>, Vec<i32>) = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| t.unwrap_or_else(|| (format!("[PAD{i}]"), token_type::UNUSED)))
        .unzip();

    let merges_json = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or("no `model.merges` array")?;
    let mut merges = Vec::with_capacity(merges_json.len());
    for m in merges_json {
        match m {
            Value::String(s) => merges.push(s.clone()),
            Value::Array(pair) => match (pair.first(), pair.get(1), pair.len()) {
                (Some(Value::String(l)), Some(Value::String(r)), 2) => {
                    merges.push(format!("{l} {r}"))
                }
                _ => return Err(format!("merge {m} is not a pair of strings")),
            },
            _ => return Err(format!("merge {m} is neither a string nor a pair")),
        }
    }
    let find = |name: &str| tokens.iter().position(|t| t == name).map(|i| i as u32);
    let bos = find("<|startoftext|>").ok_or("no <|startoftext|> token for bos")?;
    let pad = find("<|endoftext|>").ok_or("no <|endoftext|> token for pad")?;
    let eos = find("<|return|>").unwrap_or(pad);
    Ok(Vocab {
        tokens,
        merges,
        token_types,
        bos,
        eos,
        pad,
    })
}

/// The first `Split` pre-tokenizer regex, searching `Sequence`s.
fn find_split_pattern(pre: Option<&Value>) -> Option<String> {
    let pre = pre?;
    match pre.get("type").and_then(Value::as_str) {
        Some("Split") => pre
            .get("pattern")
            .and_then(|p| p.get("Regex"))
            .and_then(Value::as_str)
            .map(str::to_string),
        Some("Sequence") => pre
            .get("pretokenizers")
            .and_then(Value::as_array)?
            .iter()
            .find_map(|p| find_split_pattern(Some(p))),
        _ => None,
    }
}
