//! The harmony guide on the real o200k_harmony vocabulary with random logits (a model that
//! knows nothing): constrained requests still end in a valid call / valid JSON, and the
//! reasoning budget holds.

use std::sync::Arc;

use gpt_engine::engine::TokenGuide;
use gpt_engine::harmony::api::parse_completion;
use gpt_engine::tokenizer::Tokenizer;
use gpt_server::api::common::{AnswerFormat, ChatTool, ToolChoice};
use gpt_server::guide::{GuideEnv, HarmonyGuide};
use gpt_server::params::{final_prefill, plan, Constraints};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

fn env() -> Arc<GuideEnv> {
    let tok = Tokenizer::o200k_harmony().expect("o200k_harmony");
    Arc::new(GuideEnv::new(Arc::new(tok)).expect("guide env"))
}

fn tools() -> Vec<ChatTool> {
    serde_json::from_value(json!([{"type": "function", "function": {
        "name": "get_weather", "strict": true,
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"]}}}]))
    .unwrap()
}

/// Samples up to `max` tokens from random logits through `guide`.
fn run(env: &GuideEnv, guide: &mut HarmonyGuide, seed: u64, max: usize) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = env.vocab() + 37; // the model's vocabulary may be padded
    let mut ids = Vec::new();
    for _ in 0..max {
        let mut logits: Vec<f32> = (0..n).map(|_| rng.random::<f32>() * 4.0).collect();
        guide.mask(&mut logits);
        let (id, v) = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap();
        assert!(v.is_finite(), "every token was masked");
        let id = id as u32;
        guide.accept(id);
        ids.push(id);
        if id == env.fmt.ret || id == env.fmt.call {
            break;
        }
    }
    ids
}

#[test]
fn required_call_with_a_budget_is_valid_json_on_random_logits() {
    let env = env();
    let tools = tools();
    for seed in 0..3 {
        let p = plan(
            &env,
            Constraints {
                tools: &tools,
                choice: ToolChoice::Required,
                format: AnswerFormat::Text,
                reasoning: true,
                budget: Some(6),
                max_tokens: 400,
                format_param: "response_format",
            },
        )
        .unwrap()
        .expect("a plan");
        let mut g = HarmonyGuide::new(p, false).unwrap();
        let ids = run(&env, &mut g, seed, 400);
        assert_eq!(*ids.last().unwrap(), env.fmt.call, "ended with <|call|>");
        let c = parse_completion(&env.tok, &ids).unwrap();
        assert_eq!(c.tool_calls.len(), 1, "{c:?}");
        assert_eq!(c.tool_calls[0].name, "get_weather");
        let args: Value = serde_json::from_str(&c.tool_calls[0].arguments).unwrap();
        assert!(args["city"].is_string() && args["days"].is_i64(), "{args}");
        assert!(c.content.is_empty());
        assert!(c.reasoning_tokens <= 6 + 8, "{}", c.reasoning_tokens);
    }
}

#[test]
fn json_answer_with_reasoning_off_is_valid_on_random_logits() {
    let env = env();
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "tags"]});
    let p = plan(
        &env,
        Constraints {
            tools: &[],
            choice: ToolChoice::Auto,
            format: AnswerFormat::Json(schema),
            reasoning: false,
            budget: None,
            max_tokens: 3000,
            format_param: "response_format",
        },
    )
    .unwrap()
    .expect("a plan");
    let mut g = HarmonyGuide::new(p, true).unwrap();
    let mut ids = final_prefill(&env).unwrap();
    ids.extend(run(&env, &mut g, 9, 3000));
    assert_eq!(*ids.last().unwrap(), env.fmt.ret);
    let c = parse_completion(&env.tok, &ids).unwrap();
    let v: Value =
        serde_json::from_str(&c.content).unwrap_or_else(|e| panic!("{e}: {}", c.content));
    assert!(v["name"].is_string() && v["tags"].is_array(), "{v}");
    assert!(c.reasoning_content.is_empty());
}

#[test]
fn bad_strict_schemas_and_unknown_tools_are_400s() {
    let env = env();
    let tools = tools();
    let e = plan(
        &env,
        Constraints {
            tools: &tools,
            choice: ToolChoice::Function("nope".into()),
            format: AnswerFormat::Text,
            reasoning: true,
            budget: None,
            max_tokens: 100,
            format_param: "response_format",
        },
    )
    .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("tool_choice"));
    let e = plan(
        &env,
        Constraints {
            tools: &[],
            choice: ToolChoice::Auto,
            format: AnswerFormat::Json(
                json!({"type": "object", "properties": {"a": {"type": "no-such-type"}}}),
            ),
            reasoning: true,
            budget: None,
            max_tokens: 100,
            format_param: "response_format",
        },
    )
    .unwrap_err();
    assert_eq!(e.status, 400);
    assert_eq!(e.param.as_deref(), Some("response_format"));
    // Nothing constrained: no guide at all.
    let none = plan(
        &env,
        Constraints {
            tools: &[],
            choice: ToolChoice::Auto,
            format: AnswerFormat::Text,
            reasoning: true,
            budget: None,
            max_tokens: 100,
            format_param: "response_format",
        },
    )
    .unwrap();
    assert!(none.is_none());
}
