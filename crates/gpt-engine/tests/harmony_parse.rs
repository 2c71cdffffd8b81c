//! Harmony parsing modes and the OpenAI mapping on generated streams: well-formed turns
//! rendered by our renderer (every mode parses them back; reasoning tokens counted by
//! rendering), the same with the faults a model makes (the lenient mode repairs them), and
//! random token soup (lenient never fails nor leaks special-token text; the streamed deltas
//! always add up to the final view).

use std::sync::OnceLock;

use gpt_engine::harmony::api::{route, ApiCompletion, ApiStream, Delta, DeltaMapper, Route};
use gpt_engine::harmony::{
    HarmonyParser, Header, LenientParser, Message, ParseMode, ParsedMessage, Renderer, Role, CALL,
    CHANNEL_ID, CONSTRAIN_ID, END, MESSAGE, RETURN, START,
};
use gpt_engine::tokenizer::Tokenizer;
use serde_json::Value as Json;

fn tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::o200k_harmony().expect("o200k_harmony tokenizer"))
}

fn header_json(h: &Header, content: &str) -> Json {
    serde_json::json!({
        "role": h.role.as_str(), "name": h.name, "recipient": h.recipient,
        "channel": h.channel, "content_type": h.content_type, "content": content,
    })
}

fn messages_json(ms: &[ParsedMessage]) -> Vec<Json> {
    ms.iter()
        .map(|m| header_json(&m.header, &m.content))
        .collect()
}

/// Deterministic xorshift generator for the generated streams.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const WORDS: &[&str] = &[
    "Hi",
    " there",
    "Grüße",
    " 😀",
    "日本語",
    "\n",
    " 2 + 2",
    "{\"a\": 1}",
    " x",
    "✓",
    ".",
    " 👩\u{200d}👩\u{200d}👧",
    " analysis",
    " to=",
    "final",
    " ",
    "",
];

fn text(rng: &mut Rng) -> String {
    (0..rng.below(6)).map(|_| *rng.pick(WORDS)).collect()
}

/// A random assistant turn: analysis, preambles, calls (either channel), a final answer.
fn turn(rng: &mut Rng) -> Vec<Message> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(5) {
        let m = match rng.below(6) {
            0 | 1 => Message::text(Role::Assistant, text(rng)).with_channel("analysis"),
            2 => Message::text(Role::Assistant, text(rng)).with_channel("commentary"),
            3 | 4 => {
                let ch = *rng.pick(&["commentary", "analysis"]);
                let m = Message::text(Role::Assistant, text(rng))
                    .with_channel(ch)
                    .with_recipient(*rng.pick(&[
                        "functions.get_weather",
                        "functions.f_2",
                        "browser.search",
                    ]));
                match rng.below(3) {
                    0 => m.with_content_type("<|constrain|>json"),
                    1 => m.with_content_type("json"),
                    _ => m,
                }
            }
            _ => Message::text(Role::Assistant, text(rng)).with_channel("final"),
        };
        out.push(m);
    }
    out
}

/// The completion ids of `msgs` (after the prompt's `<|start|>assistant`), the final stop
/// being `<|return|>` where the renderer wrote `<|end|>`.
fn completion(msgs: &[Message]) -> Vec<u32> {
    let r = Renderer::new(tok()).unwrap();
    let mut ids = Vec::new();
    r.render_conversation_into(msgs, &mut ids).unwrap();
    assert_eq!(&ids[..2], &[START, 173_781]);
    if ids.last() == Some(&END) {
        *ids.last_mut().unwrap() = RETURN;
    }
    ids.split_off(2)
}

fn expected(msgs: &[Message]) -> Vec<Json> {
    msgs.iter()
        .map(|m| {
            let gpt_engine::harmony::Content::Text(t) = &m.content else {
                unreachable!()
            };
            let h = Header {
                role: m.role,
                name: m.name.clone(),
                recipient: m.recipient.clone(),
                channel: m.channel.clone(),
                content_type: m.content_type.clone(),
            };
            header_json(&h, t)
        })
        .collect()
}

/// Streams `ids` through `mapper`, checking after every token that the deltas so far, joined,
/// are the final view of what was parsed; returns the deltas.
fn stream_checked(
    ids: &[u32],
    role: Option<Role>,
    mode: ParseMode,
) -> Option<(HarmonyParser<'static>, Vec<Delta>)> {
    let mut p = HarmonyParser::with_mode(tok(), role, mode).unwrap();
    let mut mapper = DeltaMapper::new();
    let mut deltas = Vec::new();
    let check = |p: &HarmonyParser<'_>, mapper: &DeltaMapper| {
        let mut joined = mapper.joined().clone();
        if mapper.current_route() == Some(&Route::Reasoning) {
            joined.reasoning_tokens += p.current_token_count();
        }
        assert_eq!(joined, ApiCompletion::from_parser(p), "ids {ids:?}");
    };
    for &id in ids {
        let events = p.push(id).ok()?;
        deltas.extend(mapper.map_all(&events));
        check(&p, &mapper);
    }
    let events = p.finish().ok()?;
    deltas.extend(mapper.map_all(&events));
    check(&p, &mapper);
    Some((p, deltas))
}

fn reasoning_tokens_by_rendering(msgs: &[Message]) -> usize {
    let r = Renderer::new(tok()).unwrap();
    msgs.iter()
        .enumerate()
        .filter(|(_, m)| m.recipient.is_none() && m.channel.as_deref() == Some("analysis"))
        .map(|(i, m)| {
            let mut ids = Vec::new();
            r.render_message_into(m, false, &mut ids).unwrap();
            // The first message's `<|start|>assistant` belongs to the prompt; a last
            // message's `<|end|>` became `<|return|>`, one token as well.
            ids.len() - if i == 0 { 2 } else { 0 }
        })
        .sum()
}

#[test]
fn well_formed_turns_parse_identically_in_every_mode() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..300 {
        let msgs = turn(&mut rng);
        let ids = completion(&msgs);
        let want = expected(&msgs);
        let mut views = Vec::new();
        for mode in [ParseMode::Strict, ParseMode::NonStrict, ParseMode::Lenient] {
            let (p, _) = stream_checked(&ids, Some(Role::Assistant), mode)
                .unwrap_or_else(|| panic!("{mode:?} fails on {msgs:?}"));
            assert_eq!(messages_json(p.messages()), want, "{mode:?}");
            assert!(p.recoveries().is_empty(), "{mode:?}: {:?}", p.recoveries());
            let counted: usize = p.messages().iter().map(|m| m.token_count).sum();
            assert_eq!(counted, ids.len(), "every token belongs to one message");
            views.push(ApiCompletion::from_parser(&p));
        }
        assert!(views.windows(2).all(|w| w[0] == w[1]));
        let api = &views[0];
        assert_eq!(
            api.reasoning_tokens,
            reasoning_tokens_by_rendering(&msgs),
            "{msgs:?}"
        );
        let calls: Vec<&Message> = msgs
            .iter()
            .filter(|m| {
                m.recipient
                    .as_deref()
                    .is_some_and(|r| r.starts_with("functions."))
            })
            .collect();
        assert_eq!(api.tool_calls.len(), calls.len());
        assert_eq!(
            api.finish_reason(false).as_str(),
            if calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            }
        );
        assert_eq!(api.finish_reason(true).as_str(), "length");
    }
}

/// Where a message of `msgs` begins in `completion(msgs)` (0 for the first).
fn starts(ids: &[u32]) -> Vec<usize> {
    let mut s = vec![0];
    s.extend(
        ids.iter()
            .enumerate()
            .filter(|(_, &t)| t == START)
            .map(|(i, _)| i),
    );
    s
}

#[test]
fn lenient_repairs_the_faults_models_make() {
    let t = tok();
    let trailing = t.encode(" and then some", false).unwrap();
    let reserved = t
        .token_to_id("<|reserved_200013|>")
        .expect("a reserved token");
    assert!(t.is_special(reserved));
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut kinds = [0usize; 6];
    for _ in 0..400 {
        let msgs = turn(&mut rng);
        let clean = completion(&msgs);
        let mut ids = clean.clone();
        let kind = rng.below(6);
        let st = starts(&ids);
        match kind {
            0 => {
                // A stray stop token after a message's end.
                let ends: Vec<usize> = (0..ids.len())
                    .filter(|&i| [END, RETURN, CALL].contains(&ids[i]))
                    .collect();
                let at = *rng.pick(&ends) + 1;
                ids.insert(at, *rng.pick(&[RETURN, END, CALL]));
            }
            1 => ids.extend(&trailing),
            2 => {
                // A special token in the middle of a body.
                let bodies: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == MESSAGE).collect();
                let at = *rng.pick(&bodies) + 1;
                let len = ids[at..]
                    .iter()
                    .position(|&x| [END, RETURN, CALL].contains(&x))
                    .unwrap();
                ids.insert(
                    at + rng.below(len + 1),
                    *rng.pick(&[CONSTRAIN_ID, MESSAGE, reserved]),
                );
            }
            3 if st.len() > 1 => {
                // The stop token before a `<|start|>` left out.
                let at = st[1 + rng.below(st.len() - 1)];
                ids.remove(at - 1);
            }
            4 if st.len() > 1 => {
                // `<|start|>assistant` left out before a header that begins with its channel.
                let ok: Vec<usize> = st[1..]
                    .iter()
                    .copied()
                    .filter(|&i| ids[i + 2] == CHANNEL_ID)
                    .collect();
                if ok.is_empty() {
                    continue;
                }
                let at = *rng.pick(&ok);
                ids.drain(at..at + 2);
            }
            5 => {
                let at = rng.below(ids.len() + 1);
                ids.insert(at, 250_000);
            }
            _ => continue,
        }
        kinds[kind] += 1;
        let mut p = LenientParser::for_completion(t).unwrap();
        for &id in &ids {
            p.push(id);
        }
        p.finish();
        assert_eq!(
            messages_json(p.parser().messages()),
            expected(&msgs),
            "fault {kind}: {ids:?}"
        );
        assert!(!p.parser().recoveries().is_empty(), "fault {kind}");
    }
    assert!(kinds.iter().all(|&k| k >= 20), "{kinds:?}");
}

fn soup(rng: &mut Rng) -> Vec<u32> {
    let t = tok();
    let specials = [
        START,
        END,
        MESSAGE,
        CHANNEL_ID,
        CONSTRAIN_ID,
        RETURN,
        CALL,
        199_999,
        200_013,
        250_000,
    ];
    let words = [
        "assistant",
        "user",
        "analysis",
        "final",
        "commentary",
        " to=functions.f",
        " json",
        " hello",
        "Grüße",
        "😀",
        " ",
        "\n",
        "robot",
    ];
    let mut ids = Vec::new();
    for _ in 0..rng.below(50) {
        if rng.below(3) == 0 {
            ids.push(*rng.pick(&specials));
        } else {
            let w = *rng.pick(&words);
            ids.extend(t.encode(w, false).unwrap());
        }
    }
    ids
}

#[test]
fn lenient_never_fails_nor_leaks_special_text_and_deltas_add_up() {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut strict_ok = 0;
    for i in 0..1500 {
        let ids = soup(&mut rng);
        let role = (i % 3 != 0).then_some(Role::Assistant);
        let (p, deltas) =
            stream_checked(&ids, role, ParseMode::Lenient).expect("lenient never fails");
        for m in p.messages() {
            assert!(!m.content.contains("<|"), "{ids:?} -> {m:?}");
        }
        let api = ApiCompletion::from_parser(&p);
        let text = [api.content.as_str(), api.reasoning_content.as_str()];
        assert!(text.iter().all(|s| !s.contains("<|")), "{ids:?} -> {api:?}");
        assert!(api
            .tool_calls
            .iter()
            .all(|c| !c.arguments.contains("<|") && !c.name.contains("<|")));
        // Tool calls stream their name before any argument, in index order.
        let mut opened = 0;
        for d in &deltas {
            match d {
                Delta::ToolCallStart { index, .. } => {
                    assert_eq!(*index, opened);
                    opened += 1;
                }
                Delta::ToolCallArgs { index, .. } => assert!(*index + 1 == opened),
                _ => {}
            }
        }
        assert_eq!(opened, api.tool_calls.len());
        // The strict modes fail or agree with themselves too.
        for mode in [ParseMode::Strict, ParseMode::NonStrict] {
            strict_ok += usize::from(stream_checked(&ids, role, mode).is_some());
        }
    }
    assert!(strict_ok > 100, "{strict_ok}");
}

#[test]
fn api_stream_sends_what_the_final_view_shows() {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    for i in 0..400 {
        let ids = if i % 2 == 0 {
            completion(&turn(&mut rng))
        } else {
            soup(&mut rng)
        };
        let cut = rng.below(ids.len() + 1);
        let mut s = ApiStream::for_completion(tok()).unwrap();
        let mut joined = ApiCompletion::default();
        let mut deltas = Vec::new();
        for &id in &ids[..cut] {
            deltas.extend(s.push(id));
        }
        let finished = i % 3 != 0;
        if finished {
            deltas.extend(s.finish());
        }
        for d in deltas {
            match d {
                Delta::Content(t) => joined.content.push_str(&t),
                Delta::Reasoning(t) => joined.reasoning_content.push_str(&t),
                Delta::ToolCallStart { name, .. } => {
                    joined.tool_calls.push(gpt_engine::harmony::ParsedToolCall {
                        name,
                        arguments: String::new(),
                    })
                }
                Delta::ToolCallArgs { index, text } => {
                    joined.tool_calls[index].arguments.push_str(&text)
                }
            }
        }
        let view = ApiCompletion::from_parser(s.parser());
        joined.reasoning_tokens = view.reasoning_tokens;
        assert_eq!(joined, view, "{:?}", &ids[..cut]);
        assert_eq!(s.completion(), view);
        if finished {
            assert_eq!(
                gpt_engine::harmony::api::parse_completion(tok(), &ids[..cut]).unwrap(),
                view
            );
        }
    }
}

#[test]
fn routes_follow_the_serving_design() {
    let h = |role, channel: Option<&str>, recipient: Option<&str>| Header {
        role,
        name: None,
        recipient: recipient.map(str::to_string),
        channel: channel.map(str::to_string),
        content_type: None,
    };
    use Role::*;
    assert_eq!(
        route(&h(Assistant, Some("analysis"), None)),
        Route::Reasoning
    );
    assert_eq!(route(&h(Assistant, Some("final"), None)), Route::Content);
    assert_eq!(
        route(&h(Assistant, Some("commentary"), None)),
        Route::Content
    );
    assert_eq!(route(&h(Assistant, None, None)), Route::Content);
    assert_eq!(
        route(&h(Assistant, Some("analysis"), Some("functions.f"))),
        Route::ToolCall("f".into())
    );
    assert_eq!(
        route(&h(Assistant, Some("commentary"), Some("functions."))),
        Route::Hidden
    );
    assert_eq!(
        route(&h(Assistant, Some("commentary"), Some("browser.search"))),
        Route::Hidden
    );
    assert_eq!(route(&h(Tool, Some("commentary"), None)), Route::Hidden);
    assert_eq!(route(&h(User, None, None)), Route::Hidden);
}
