//! Three conversations at once on one engine, their tokens printed interleaved as they come.
//!
//! ```sh
//! cargo run --release -p gpt-engine --example three_conversations [MODEL.gguf]
//! ```
//!
//! Without a path it generates the tiny random-weight model (real vocabulary, gibberish text)
//! into the system's temp folder and runs that.

use std::path::PathBuf;
use std::sync::mpsc;

use gpt_engine::engine::{Engine, EngineOptions, Event, Request};
use gpt_engine::harmony::{render_chat_prompt, ChatMessage, ChatRequest, ChatRole, PromptOptions};
use gpt_engine::sampling::SamplingParams;

fn user(text: &str) -> ChatMessage {
    ChatMessage::text(ChatRole::User, text)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = match std::env::args().nth(1) {
        Some(p) => PathBuf::from(p),
        None => {
            let p = std::env::temp_dir().join("gptoss-example-tiny.gguf");
            if !p.exists() {
                let vocab = gpt_engine::tokenizer::o200k_harmony_vocab()?;
                gpt_engine::synth::write_model(
                    &gpt_engine::synth::SynthSpec::tiny(),
                    &vocab,
                    &p,
                    |_, _| {},
                )?;
            }
            p
        }
    };
    let engine = Engine::load(&path, EngineOptions::default())?;
    let tok = engine
        .tokenizer_handle()
        .ok_or("the model file has no tokenizer")?;
    let stops: Vec<u32> = ["<|return|>", "<|call|>"]
        .iter()
        .filter_map(|n| tok.token_to_id(n))
        .collect();
    let questions = [
        "What is the tallest mountain?",
        "Write a haiku about rust.",
        "Explain continuous batching in one sentence.",
    ];
    // Each conversation's events are forwarded, tagged, to one channel as they arrive.
    let (tx, rx) = mpsc::channel();
    for (i, q) in questions.iter().enumerate() {
        let req = ChatRequest {
            messages: vec![user(q)],
            tools: vec![],
            reasoning_effort: None,
        };
        let prompt = render_chat_prompt(&tok, &req, &PromptOptions::with_date("2026-12-01"))?;
        let mut r = Request::new(prompt, 48);
        r.sampling = SamplingParams {
            temperature: 0.8,
            seed: Some(i as u64),
            ..Default::default()
        };
        r.stop_tokens = stops.clone();
        r.harmony = true;
        let mut h = engine.submit(r)?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            while let Some(e) = h.blocking_next() {
                if tx.send((i, e)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let tags = ['A', 'B', 'C'];
    for (i, e) in rx {
        match e {
            Event::Token(t) if !t.text.is_empty() => println!("[{}] {:?}", tags[i], t.text),
            Event::Channel { channel, recipient } => {
                println!("[{}] <channel {channel:?} to {recipient:?}>", tags[i])
            }
            Event::Finished { reason, usage } => println!(
                "[{}] finished: {reason:?}, {} prompt + {} generated tokens",
                tags[i], usage.prompt_tokens, usage.completion_tokens
            ),
            _ => {}
        }
    }
    Ok(())
}
