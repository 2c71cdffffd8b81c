//! Harmony rendering and parsing against openai-harmony 0.0.8 (fixtures from
//! `fixtures/make_harmony_fixtures.py`).

use std::sync::OnceLock;

use gpt_engine::harmony::{
    render_chat_prompt, ChatRequest, Content, HarmonyError, HarmonyEvent, HarmonyParser, Header,
    Message, PromptOptions, Renderer, Role, END, STOP_TOKENS,
};
use gpt_engine::tokenizer::Tokenizer;
use serde_json::Value as Json;

fn tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::o200k_harmony().expect("o200k_harmony tokenizer"))
}

fn fixture() -> &'static Json {
    static F: OnceLock<Json> = OnceLock::new();
    F.get_or_init(|| {
        let path = format!("{}/tests/fixtures/harmony.json", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    })
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn opt(v: &Json) -> Option<String> {
    v.as_str().map(str::to_string)
}

#[test]
fn prompts_match_openai_harmony() {
    let cases = fixture()["render"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let req: ChatRequest = serde_json::from_value(case["request"].clone())
            .unwrap_or_else(|e| panic!("{name}: request does not parse: {e}"));
        let opts = PromptOptions::with_date(case["date"].as_str().unwrap());
        let got = render_chat_prompt(tok(), &req, &opts).unwrap();
        let want = ids(&case["tokens"]);
        if got != want {
            panic!(
                "{name}: token mismatch\n--- ours ---\n{}\n--- openai-harmony ---\n{}",
                tok().decode(&got).unwrap(),
                case["text"].as_str().unwrap()
            );
        }
        assert_eq!(tok().decode(&got).unwrap(), case["text"].as_str().unwrap());
        // Every prompt is ready for sampling the assistant.
        assert_eq!(&got[got.len() - 2..], &[200_006, 173_781], "{name}");
    }
}

#[test]
fn stop_tokens_match_openai_harmony() {
    let mut ours = STOP_TOKENS.to_vec();
    ours.sort_unstable();
    assert_eq!(ours, ids(&fixture()["stop_tokens_for_assistant_actions"]));
    assert!(!STOP_TOKENS.contains(&END));
    // The wider set harmony uses for parsing is what closes a message.
    assert_eq!(ids(&fixture()["stop_tokens"]), vec![200_002, END, 200_012]);
}

fn header_matches(h: &Header, m: &Json) -> bool {
    h.role.as_str() == m["role"].as_str().unwrap()
        && h.name == opt(&m["name"])
        && h.recipient == opt(&m["recipient"])
        && h.channel == opt(&m["channel"])
        && h.content_type == opt(&m["content_type"])
}

#[test]
fn parser_matches_openai_harmony() {
    for case in fixture()["parse"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let tokens = ids(&case["tokens"]);
        let want = case["messages"].as_array().unwrap();
        let mut p = HarmonyParser::for_completion(tok()).unwrap();
        let mut events = Vec::new();
        for &t in &tokens {
            events.extend(p.push(t).unwrap_or_else(|e| panic!("{name}: {e}")));
        }
        events.extend(p.finish().unwrap());
        let got = p.messages();
        assert_eq!(got.len(), want.len(), "{name}: {got:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(header_matches(&g.header, w), "{name}: {g:?} vs {w}");
            assert_eq!(g.content, w["content"].as_str().unwrap(), "{name}");
        }
        // Events: start header, deltas that add up to the content, end.
        let mut starts = 0;
        let mut text = String::new();
        let mut ended = Vec::new();
        for e in &events {
            match e {
                HarmonyEvent::MessageStart(h) => {
                    assert!(header_matches(h, &want[starts]), "{name}");
                    starts += 1;
                    text.clear();
                }
                HarmonyEvent::ContentDelta(d) => text.push_str(d),
                HarmonyEvent::MessageEnd(m) => {
                    assert_eq!(&text, &m.content, "{name}: deltas");
                    ended.push(m.clone());
                }
            }
        }
        assert_eq!(starts, want.len(), "{name}");
        assert_eq!(ended.as_slice(), got, "{name}");
        // Tool calls are exposed with JSON arguments.
        for m in got {
            if let Some(call) = m.tool_call() {
                assert_eq!(
                    Some(format!("functions.{}", call.name)),
                    m.header.recipient,
                    "{name}"
                );
                let args: Json = serde_json::from_str(&call.arguments)
                    .unwrap_or_else(|e| panic!("{name}: arguments not JSON: {e}"));
                assert!(args.is_object(), "{name}");
            }
        }
        let last = *tokens.last().unwrap();
        if STOP_TOKENS.contains(&last) {
            assert_eq!(p.last_stop(), Some(last), "{name}");
        }
    }
}

#[test]
fn rendered_messages_parse_back() {
    let msgs = vec![
        Message::text(Role::Assistant, "thinking… ✓").with_channel("analysis"),
        Message::text(Role::Assistant, "{\"x\": [1, 2]}")
            .with_channel("commentary")
            .with_recipient("functions.do_it")
            .with_content_type("<|constrain|>json"),
        Message::text(Role::Tool, "result 😀")
            .with_name("functions.do_it")
            .with_recipient("assistant")
            .with_channel("commentary"),
        Message::text(Role::User, "next"),
        Message::text(Role::Assistant, "Answer.").with_channel("final"),
    ];
    let r = Renderer::new(tok()).unwrap();
    let mut ids = Vec::new();
    r.render_conversation_into(&msgs, &mut ids).unwrap();
    let mut p = HarmonyParser::new(tok()).unwrap();
    for &t in &ids {
        p.push(t).unwrap();
    }
    p.finish().unwrap();
    let got = p.messages();
    assert_eq!(got.len(), msgs.len());
    for (g, m) in got.iter().zip(&msgs) {
        assert_eq!(g.header.role, m.role);
        assert_eq!(g.header.name, m.name);
        assert_eq!(g.header.recipient, m.recipient);
        assert_eq!(g.header.channel, m.channel);
        assert_eq!(g.header.content_type, m.content_type);
        assert_eq!(Content::Text(g.content.clone()), m.content);
    }
    assert_eq!(got[1].tool_call().unwrap().name, "do_it");
    assert!(got[2].tool_call().is_none());
}

#[test]
fn parser_rejects_malformed_streams() {
    let t = tok();
    let mut p = HarmonyParser::new(t).unwrap();
    let hello = t.encode("hello", false).unwrap();
    assert!(matches!(
        p.push(hello[0]),
        Err(HarmonyError::UnexpectedToken { .. })
    ));
    let mut p = HarmonyParser::for_completion(t).unwrap();
    for id in t.encode("<|channel|>final", true).unwrap() {
        p.push(id).unwrap();
    }
    assert!(matches!(p.finish(), Err(HarmonyError::TruncatedHeader)));
    // As openai-harmony's strict mode, a stop token inside a header is header text: the
    // header then fails at `<|message|>`, or the stream ends inside it.
    let mut p = HarmonyParser::for_completion(t).unwrap();
    p.push(t.token_to_id("<|channel|>").unwrap()).unwrap();
    p.push(END).unwrap();
    assert!(p.messages().is_empty());
    assert!(matches!(p.finish(), Err(HarmonyError::TruncatedHeader)));
    let mut p = HarmonyParser::for_completion(t).unwrap();
    let mut results = Vec::new();
    for id in t
        .encode("<|channel|>final<|end|> a b<|message|>", true)
        .unwrap()
    {
        results.push(p.push(id).is_ok());
    }
    let last = results.pop();
    assert!(results.iter().all(|&ok| ok));
    assert_eq!(
        last,
        Some(false),
        "three words after the channel do not parse"
    );
}

#[test]
fn request_errors_are_typed() {
    let req: ChatRequest = serde_json::from_str(
        r#"{"messages":[{"role":"user","content":"x"},{"role":"tool","tool_call_id":"nope","content":"1"}]}"#,
    )
    .unwrap();
    let err = render_chat_prompt(tok(), &req, &PromptOptions::with_date("2025-01-01"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
    let req: ChatRequest = serde_json::from_str(
        r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
    )
    .unwrap();
    assert!(render_chat_prompt(tok(), &req, &PromptOptions::with_date("2025-01-01")).is_err());
}
