//! `gptoss run` and `gptoss chat`: harmony-formatted generation, streamed.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gpt_engine::engine::{Engine, EngineOptions, Event, FinishReason, Request};
use gpt_engine::harmony::{
    render_chat_prompt, ChatMessage, ChatRequest, ChatRole, HarmonyEvent, HarmonyParser,
    MessageContent, PromptOptions, ReasoningEffort,
};
use gpt_engine::sampling::SamplingParams;
use gpt_engine::tokenizer::Tokenizer;

use crate::model_source;
use crate::tools::device;

/// Sampling flags shared by `run` and `chat`.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 = greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Keep the k most probable tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set with this much probability (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Drop tokens below this fraction of the best token's probability (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Divide the logits of recently seen tokens by this (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Subtract this from the logits of tokens seen in the window (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    /// Subtract this times the count of each token seen in the window (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Tokens of history the penalties look at.
    #[arg(long, default_value_t = 64)]
    pub penalty_window: usize,
    /// RNG seed: the same inputs and seed give the same tokens.
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            penalty_window: self.penalty_window,
            seed: self.seed,
        }
    }
}

/// Flags of `run` and `chat`.
#[derive(clap::Args, Debug, Clone)]
pub struct ChatArgs {
    /// Model: a GGUF path, `tiny` (generated offline), or a Hugging Face repo id
    /// (`REPO` or `REPO:FILE`).
    #[arg(long, default_value = model_source::DEFAULT_REPO)]
    pub model: String,
    /// Most tokens to generate per answer.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Context size in tokens.
    #[arg(long, default_value_t = 4096)]
    pub ctx: usize,
    /// On a GPU, keep the MoE blocks (router, experts) of the first N layers in host memory
    /// and run them on the CPU (llama.cpp's `--n-cpu-moe`); `inspect --check --vram SIZE`
    /// suggests the N that fits a card.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub cpu_moe: usize,
    /// Reasoning effort written into the system message.
    #[arg(long, value_enum, default_value = "medium")]
    pub reasoning_effort: Effort,
    /// Instructions (rendered as the developer message).
    #[arg(long)]
    pub system: Option<String>,
    /// Print the analysis channel (dimmed).
    #[arg(long)]
    pub show_reasoning: bool,
    /// Device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// CPU matmul precision: exact (f32 activations) or fast (int8 activations, as llama.cpp).
    #[arg(long, value_enum, default_value_t)]
    pub cpu_precision: crate::tools::CpuPrecision,
    /// Element type of the KV cache (default: f16 on CUDA, f32 on the CPU).
    #[arg(long, value_enum)]
    pub kv_type: Option<crate::tools::KvTypeArg>,
    /// Prefill chunk size.
    #[arg(long, default_value_t = 2048)]
    pub chunk: usize,
    /// Current date for the system message (default: today).
    #[arg(long)]
    pub date: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// `--reasoning-effort`.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Effort {
    /// low
    Low,
    /// medium
    Medium,
    /// high
    High,
}

impl From<Effort> for ReasoningEffort {
    fn from(e: Effort) -> Self {
        match e {
            Effort::Low => ReasoningEffort::Low,
            Effort::Medium => ReasoningEffort::Medium,
            Effort::High => ReasoningEffort::High,
        }
    }
}

/// `gptoss run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub chat: ChatArgs,
    /// Plain completion of PROMPT (special tokens parsed), no chat format.
    #[arg(long)]
    pub raw: bool,
    /// The prompt (default: read from stdin).
    pub prompt: Option<String>,
}

/// Today's date, `YYYY-MM-DD`.
pub fn today() -> String {
    chrono::Local::now().format("%Y-%m-%d").to_string()
}

struct Session {
    engine: Engine,
    tok: Arc<Tokenizer>,
    args: ChatArgs,
    stop: Arc<AtomicBool>,
    /// `<|return|>`, `<|call|>` and `<|endoftext|>`, looked up by name.
    stop_ids: Vec<u32>,
}

fn user(text: &str) -> ChatMessage {
    ChatMessage::text(ChatRole::User, text)
}

/// Timings of one answer.
struct Stats {
    prompt: usize,
    cached: usize,
    generated: usize,
    ttft: Duration,
    decode: Duration,
    finish: Option<FinishReason>,
}

impl Session {
    fn open(args: &ChatArgs) -> Result<Self> {
        let path = model_source::resolve(&args.model)?;
        let opts = EngineOptions {
            device: device(&args.device)?,
            ctx: Some(args.ctx),
            max_seqs: 1,
            max_batch_tokens: args.chunk,
            model: gpt_engine::model::ModelOptions {
                cpu_precision: args.cpu_precision.into(),
                kv_type: args.kv_type.map(Into::into),
                ..Default::default()
            },
            cpu_moe: args.cpu_moe,
            ..Default::default()
        };
        let engine =
            Engine::load_with_progress(&path, opts, Some(&mut model_source::load_progress()))
                .with_context(|| format!("loading {}", path.display()))?;
        let tok = engine
            .tokenizer_handle()
            .with_context(|| format!("{} has no tokenizer", path.display()))?;
        let stop_ids = ["<|return|>", "<|call|>", "<|endoftext|>"]
            .iter()
            .filter_map(|n| tok.token_to_id(n))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        // Ctrl-C ends the current generation cleanly; a second one exits.
        ctrlc::set_handler(move || {
            if s.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C handler")?;
        Ok(Self {
            engine,
            tok,
            args: args.clone(),
            stop,
            stop_ids,
        })
    }

    /// Generates after `prompt`, calling `on_token(id, text)`; returns the ids and timings.
    fn generate(
        &self,
        prompt: &[u32],
        mut on_token: impl FnMut(u32, &str),
    ) -> Result<(Vec<u32>, Stats)> {
        self.stop.store(false, Ordering::SeqCst);
        let mut req = Request::new(prompt.to_vec(), self.args.max_tokens);
        req.sampling = self.args.sampling.params();
        req.stop_tokens = self.stop_ids.clone();
        let start = Instant::now();
        let mut h = self.engine.submit(req)?;
        let mut ids = Vec::new();
        let mut st = Stats {
            prompt: prompt.len(),
            cached: 0,
            generated: 0,
            ttft: Duration::ZERO,
            decode: Duration::ZERO,
            finish: None,
        };
        let mut first: Option<Instant> = None;
        while let Some(e) = h.blocking_next() {
            match e {
                Event::Started { cached_tokens } => st.cached = cached_tokens,
                Event::Token(t) => {
                    if first.is_none() {
                        first = Some(Instant::now());
                        st.ttft = start.elapsed();
                    }
                    ids.push(t.id);
                    on_token(t.id, &t.text);
                    if self.stop.load(Ordering::SeqCst) {
                        h.cancel();
                    }
                }
                Event::Text(t) => on_token(u32::MAX, &t),
                Event::Channel { .. } => {}
                Event::Finished { reason, usage } => {
                    st.generated = usage.completion_tokens;
                    st.finish = Some(reason);
                }
            }
        }
        if let Some(f) = first {
            st.decode = f.elapsed();
        }
        if let Some(FinishReason::Error(e)) = &st.finish {
            anyhow::bail!("generation failed: {e}");
        }
        Ok((ids, st))
    }

    /// Generates after `prompt`, streaming the harmony channels; returns the generated ids.
    fn answer(&mut self, prompt: &[u32]) -> Result<(Vec<u32>, Stats)> {
        let mut parser = HarmonyParser::for_completion(&self.tok)?;
        let show = self.args.show_reasoning;
        let mut out = std::io::stdout();
        let mut channel: Option<String> = None;
        let mut err = None;
        // Ids seen before the first message header closes; past HEADER_LIMIT of them the
        // output is not harmony (random weights) and is streamed as raw text instead.
        const HEADER_LIMIT: usize = 32;
        let mut pending: Vec<u32> = Vec::new();
        let mut started = false;
        let mut raw = false;
        let tok = &self.tok;
        let res = self.generate(prompt, |id, _| {
            if id == u32::MAX {
                return;
            }
            if !started && !raw {
                pending.push(id);
                if pending.len() > HEADER_LIMIT {
                    raw = true;
                    err = Some(format!(
                        "no message header in the first {HEADER_LIMIT} tokens"
                    ));
                    if let Ok(t) = tok.decode(&pending) {
                        let _ = write!(out, "{t}");
                    }
                }
            } else if raw {
                if let Ok(t) = tok.decode(&[id]) {
                    let _ = write!(out, "{t}");
                    let _ = out.flush();
                }
            }
            if raw {
                return;
            }
            match parser.push(id) {
                Ok(events) => {
                    for ev in events {
                        match ev {
                            HarmonyEvent::MessageStart(h) => {
                                started = true;
                                channel = h.channel.clone();
                                if show && channel.as_deref() == Some("analysis") {
                                    let _ = write!(out, "\x1b[2m");
                                }
                            }
                            HarmonyEvent::ContentDelta(text) => match channel.as_deref() {
                                Some("analysis") if !show => {}
                                _ => {
                                    let _ = write!(out, "{text}");
                                    let _ = out.flush();
                                }
                            },
                            HarmonyEvent::MessageEnd(m) => {
                                if show && m.header.channel.as_deref() == Some("analysis") {
                                    let _ = writeln!(out, "\x1b[0m");
                                }
                                if let Some(call) = m.tool_call() {
                                    let _ = writeln!(
                                        out,
                                        "\n[tool call] {}({})",
                                        call.name, call.arguments
                                    );
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    // A malformed stream (random weights do this): show the raw text instead.
                    if err.is_none() {
                        err = Some(e.to_string());
                    }
                    if let Ok(t) = tok.decode(&[id]) {
                        let _ = write!(out, "{t}");
                        let _ = out.flush();
                    }
                }
            }
        })?;
        if !started && !raw && !pending.is_empty() {
            err.get_or_insert_with(|| "no message header".to_string());
            if let Ok(t) = self.tok.decode(&pending) {
                let _ = write!(out, "{t}");
            }
        }
        println!();
        if let Some(e) = err {
            eprintln!(
                "note: the output did not follow the harmony format ({e}); printed as raw text"
            );
        }
        Ok(res)
    }
}

fn report(st: &Stats) {
    let tps = if st.generated > 1 && !st.decode.is_zero() {
        (st.generated - 1) as f64 / st.decode.as_secs_f64()
    } else {
        0.0
    };
    eprintln!(
        "[{} prompt tokens computed ({} of {} from the prefix cache), {} generated; time to first token {:.1} ms; decode {:.1} tok/s; finish: {:?}]",
        st.prompt - st.cached,
        st.cached,
        st.prompt,
        st.generated,
        st.ttft.as_secs_f64() * 1e3,
        tps,
        st.finish
    );
}

fn request(args: &ChatArgs, messages: Vec<ChatMessage>) -> ChatRequest {
    let mut all = Vec::new();
    if let Some(s) = &args.system {
        all.push(ChatMessage {
            role: ChatRole::System,
            content: Some(MessageContent::Text(s.clone())),
            ..user("")
        });
    }
    all.extend(messages);
    ChatRequest {
        messages: all,
        tools: vec![],
        reasoning_effort: Some(args.reasoning_effort.into()),
    }
}

/// `gptoss run`.
pub fn run(a: &RunArgs) -> Result<()> {
    let prompt = match &a.prompt {
        Some(p) => p.clone(),
        None => {
            std::io::read_to_string(std::io::stdin()).context("reading the prompt from stdin")?
        }
    };
    let mut s = Session::open(&a.chat)?;
    let date = a.chat.date.clone().unwrap_or_else(today);
    if a.raw {
        let ids = s.tok.encode(&prompt, true)?;
        let mut out = std::io::stdout();
        let (_, stats) = s.generate(&ids, |_, text| {
            let _ = write!(out, "{text}");
            let _ = out.flush();
        })?;
        println!();
        report(&stats);
        return Ok(());
    }
    let req = request(&a.chat, vec![user(&prompt)]);
    let ids = render_chat_prompt(&s.tok, &req, &PromptOptions::with_date(date))?;
    let (_, stats) = s.answer(&ids)?;
    report(&stats);
    Ok(())
}

/// `gptoss chat`: multi-turn; the KV cache is kept between turns. The transcript the model
/// sees keeps its own earlier tokens (reasoning included), each answer closed with `<|end|>`,
/// so a new turn computes only its new tokens.
pub fn chat(a: &ChatArgs) -> Result<()> {
    let mut s = Session::open(a)?;
    let date = a.date.clone().unwrap_or_else(today);
    let end = s.tok.token_to_id("<|end|>").context("no <|end|> token")?;
    let mut transcript: Vec<u32> = Vec::new();
    eprintln!(
        "chat with {} (Ctrl-C stops an answer, Ctrl-D exits)",
        a.model
    );
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let text = line.trim_end();
        if text.is_empty() {
            continue;
        }
        let prompt = if transcript.is_empty() {
            render_chat_prompt(
                &s.tok,
                &request(a, vec![user(text)]),
                &PromptOptions::with_date(date.clone()),
            )?
        } else {
            let mut p = transcript.clone();
            p.push(end);
            p.extend(s.tok.encode(
                &format!("<|start|>user<|message|>{text}<|end|><|start|>assistant"),
                true,
            )?);
            p
        };
        if prompt.len() + 1 >= a.ctx {
            eprintln!(
                "the conversation no longer fits the context of {} tokens; starting over",
                a.ctx
            );
            transcript.clear();
            continue;
        }
        let (generated, stats) = s.answer(&prompt)?;
        report(&stats);
        transcript = prompt;
        // Keep what the model wrote, minus the stop token (replaced by <|end|> next turn).
        transcript.extend(
            generated
                .iter()
                .copied()
                .filter(|t| !s.stop_ids.contains(t)),
        );
    }
    Ok(())
}
