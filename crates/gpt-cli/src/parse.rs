//! `gptoss parse`: completion token ids → harmony messages and the OpenAI answer.

use anyhow::{Context, Result};
use gpt_engine::harmony::api::{ApiCompletion, Delta, DeltaMapper};
use gpt_engine::harmony::{HarmonyParser, Header, ParseMode, ParsedToolCall, Role};
use gpt_engine::tokenizer::Tokenizer;
use serde_json::{json, Value};

use crate::model_source;

/// Which header the input begins in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartRole {
    /// The ids after a prompt's `<|start|>assistant` (a completion).
    Assistant,
    /// A whole transcript that begins with `<|start|>`.
    None,
}

/// `gptoss parse`.
#[derive(clap::Args, Debug)]
pub struct ParseArgs {
    /// Model whose tokenizer to use: a GGUF path, `tiny`, or a Hugging Face repo id
    /// (only its metadata is read).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Token ids, separated by commas (and/or spaces).
    #[arg(long, allow_hyphen_values = true)]
    pub tokens: String,
    /// `assistant`: ids after `<|start|>assistant`; `none`: a transcript from `<|start|>`.
    #[arg(long, value_enum, default_value = "assistant")]
    pub role: StartRole,
    /// Recover from a header closed without `<|message|>`, as openai-harmony's non-strict mode.
    #[arg(long, conflicts_with = "lenient")]
    pub non_strict: bool,
    /// Never fail: what a server does with whatever the model wrote.
    #[arg(long)]
    pub lenient: bool,
    /// The stream has not ended: the last message may be unfinished.
    #[arg(long)]
    pub partial: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Parses `--tokens`.
fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.parse::<u32>()
                .with_context(|| format!("--tokens: {w:?} is not a token id"))
        })
        .collect()
}

fn tokenizer_of(model: &str) -> Result<Tokenizer> {
    let path = model_source::resolve(model)?;
    let file = gguf_format::GgufModel::open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    Tokenizer::from_gguf_metadata(file.metadata())
        .with_context(|| format!("reading the tokenizer of {}", path.display()))
}

fn header_json(h: &Header, content: &str) -> Value {
    json!({
        "role": h.role.as_str(),
        "name": h.name,
        "recipient": h.recipient,
        "channel": h.channel,
        "content_type": h.content_type,
        "content": content,
    })
}

fn calls_json(calls: &[ParsedToolCall]) -> Value {
    calls
        .iter()
        .map(|c| json!({"name": c.name, "arguments": c.arguments}))
        .collect()
}

/// The streamed deltas joined per field (tool calls by their index).
fn join_deltas(deltas: &[Delta]) -> Value {
    let (mut content, mut reasoning) = (String::new(), String::new());
    let mut calls: Vec<ParsedToolCall> = Vec::new();
    for d in deltas {
        match d {
            Delta::Content(t) => content.push_str(t),
            Delta::Reasoning(t) => reasoning.push_str(t),
            Delta::ToolCallStart { index, name } => {
                if *index == calls.len() {
                    calls.push(ParsedToolCall {
                        name: name.clone(),
                        arguments: String::new(),
                    });
                }
            }
            Delta::ToolCallArgs { index, text } => {
                if let Some(c) = calls.get_mut(*index) {
                    c.arguments.push_str(text);
                }
            }
        }
    }
    json!({"content": content, "reasoning_content": reasoning, "tool_calls": calls_json(&calls)})
}

/// Parses the ids and prints the messages and the API answer.
pub fn parse(a: &ParseArgs) -> Result<()> {
    let ids = parse_ids(&a.tokens)?;
    let tok = tokenizer_of(&a.model)?;
    let mode = match (a.lenient, a.non_strict) {
        (true, _) => ParseMode::Lenient,
        (false, true) => ParseMode::NonStrict,
        (false, false) => ParseMode::Strict,
    };
    let role = (a.role == StartRole::Assistant).then_some(Role::Assistant);
    let mut parser = HarmonyParser::with_mode(&tok, role, mode)?;
    let mut mapper = DeltaMapper::new();
    let mut deltas = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let events = parser
            .push(id)
            .with_context(|| format!("token {i} (id {id})"))?;
        deltas.extend(mapper.map_all(&events));
    }
    if !a.partial {
        let events = parser.finish().context("end of stream")?;
        deltas.extend(mapper.map_all(&events));
    }
    let api = ApiCompletion::from_parser(&parser);
    let messages: Vec<Value> = parser
        .messages()
        .iter()
        .map(|m| header_json(&m.header, &m.content))
        .collect();
    let current = parser
        .current_header()
        .zip(parser.current_content())
        .map(|(h, t)| header_json(h, t));
    if !a.json {
        for m in parser.messages() {
            let h = &m.header;
            println!(
                "[{} {} to={} {}] {:?}",
                h.role.as_str(),
                h.channel.as_deref().unwrap_or("-"),
                h.recipient.as_deref().unwrap_or("-"),
                h.content_type.as_deref().unwrap_or("-"),
                m.content
            );
        }
        if let Some(t) = parser.current_content() {
            println!("[unfinished] {t:?}");
        }
        return Ok(());
    }
    let out = json!({
        "messages": messages,
        "content": api.content,
        "reasoning_content": api.reasoning_content,
        "tool_calls": calls_json(&api.tool_calls),
        "current_content": parser.current_content(),
        "current": current,
        "deltas_joined": join_deltas(&deltas),
        "reasoning_tokens": api.reasoning_tokens,
        "finish_reason": api.finish_reason(false).as_str(),
        "recoveries": parser.recoveries().len(),
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_commas_and_spaces() {
        assert_eq!(parse_ids("1,2, 3 4").unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(parse_ids("").unwrap(), Vec::<u32>::new());
        for bad in ["1,x", "-1", "4294967296", "1.5"] {
            let e = parse_ids(bad).unwrap_err().to_string();
            assert!(e.contains("--tokens"), "{bad}: {e}");
        }
    }

    #[test]
    fn deltas_join_by_field_and_index() {
        let d = vec![
            Delta::Reasoning("a".into()),
            Delta::ToolCallStart {
                index: 0,
                name: "f".into(),
            },
            Delta::Content("x".into()),
            Delta::ToolCallArgs {
                index: 0,
                text: "{".into(),
            },
            Delta::ToolCallStart {
                index: 1,
                name: "g".into(),
            },
            Delta::ToolCallArgs {
                index: 1,
                text: "[]".into(),
            },
            Delta::ToolCallArgs {
                index: 0,
                text: "}".into(),
            },
            Delta::Reasoning("b".into()),
        ];
        let j = join_deltas(&d);
        assert_eq!(j["content"], "x");
        assert_eq!(j["reasoning_content"], "ab");
        assert_eq!(j["tool_calls"][0]["arguments"], "{}");
        assert_eq!(j["tool_calls"][1]["name"], "g");
        assert_eq!(j["tool_calls"][1]["arguments"], "[]");
    }
}
