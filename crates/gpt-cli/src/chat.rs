//! `gptoss run` and `gptoss chat`: harmony-formatted generation, streamed.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use gpt_engine::generate::{generate, GenerateParams, GenerateStats};
use gpt_engine::harmony::{
    render_chat_prompt, ChatMessage, ChatRequest, ChatRole, HarmonyEvent, HarmonyParser,
    MessageContent, PromptOptions, ReasoningEffort, STOP_TOKENS,
};
use gpt_engine::kv_cache::KvCache;
use gpt_engine::loader::{load_any, LoadConfig};
use gpt_engine::model::GptOss;
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
    model: GptOss,
    tok: Tokenizer,
    cache: KvCache,
    args: ChatArgs,
    stop: Arc<AtomicBool>,
}

fn user(text: &str) -> ChatMessage {
    ChatMessage {
        role: ChatRole::User,
        content: Some(MessageContent::Text(text.to_string())),
        tool_calls: vec![],
        tool_call_id: None,
        name: None,
        reasoning_content: None,
    }
}

impl Session {
    fn open(args: &ChatArgs) -> Result<Self> {
        let path = model_source::resolve(&args.model)?;
        let dev = device(&args.device)?;
        let cfg = LoadConfig {
            ctx: args.ctx,
            chunk: args.chunk,
            dense: crate::tools::dense_mode(&dev, false),
            ..Default::default()
        };
        let (model, file) = load_any(&path, &dev, &cfg, Some(&mut model_source::load_progress()))
            .with_context(|| format!("loading {}", path.display()))?;
        let tok = match &file {
            Some(f) => Tokenizer::from_gguf_metadata(f.metadata())
                .context("building the tokenizer from the GGUF")?,
            None => Tokenizer::from_tokenizer_json(path.join("tokenizer.json"))
                .with_context(|| format!("reading {}", path.join("tokenizer.json").display()))?,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        // Ctrl-C ends the current generation cleanly; a second one exits.
        ctrlc::set_handler(move || {
            if s.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
        })
        .context("installing the Ctrl-C handler")?;
        let cache = model.new_cache();
        Ok(Self {
            model,
            tok,
            cache,
            args: args.clone(),
            stop,
        })
    }

    fn params(&self) -> GenerateParams {
        GenerateParams {
            max_new_tokens: self.args.max_tokens,
            stop_tokens: STOP_TOKENS.to_vec(),
            sampling: self.args.sampling.params(),
            ctx: self.args.ctx,
            chunk: self.args.chunk,
        }
    }

    /// Generates after `prompt`, streaming the harmony channels; returns the generated ids.
    fn answer(&mut self, prompt: &[u32]) -> Result<(Vec<u32>, GenerateStats)> {
        self.stop.store(false, Ordering::SeqCst);
        let mut parser = HarmonyParser::for_completion(&self.tok)?;
        let show = self.args.show_reasoning;
        let stop = self.stop.clone();
        let mut out = std::io::stdout();
        let mut channel: Option<String> = None;
        let mut err = None;
        let params = self.params();
        // Ids seen before the first message header closes; past HEADER_LIMIT of them the
        // output is not harmony (random weights) and is streamed as raw text instead.
        const HEADER_LIMIT: usize = 32;
        let mut pending: Vec<u32> = Vec::new();
        let mut started = false;
        let mut raw = false;
        let tok = &self.tok;
        let res = generate(&self.model, &mut self.cache, prompt, &params, |id| {
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
                return if stop.load(Ordering::SeqCst) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                };
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
            if stop.load(Ordering::SeqCst) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
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

fn report(stats: &GenerateStats) {
    eprintln!(
        "[{} prompt tokens, {} generated; time to first token {:.1} ms; decode {:.1} tok/s; stop: {:?}]",
        stats.prefill_tokens,
        stats.generated,
        stats.time_to_first_token.as_secs_f64() * 1e3,
        stats.decode_tokens_per_s(),
        stats.stopped_by
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
        let params = GenerateParams {
            stop_tokens: vec![200002, 200012, 199999],
            ..s.params()
        };
        let stop = s.stop.clone();
        let mut dec = s.tok.stream_decoder();
        let mut out = std::io::stdout();
        let (_, stats) = generate(&s.model, &mut s.cache, &ids, &params, |id| {
            if let Ok(Some(t)) = dec.push(id) {
                let _ = write!(out, "{t}");
                let _ = out.flush();
            }
            if stop.load(Ordering::SeqCst) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
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
            s.cache.reset();
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
                .filter(|t| !STOP_TOKENS.contains(t)),
        );
    }
    Ok(())
}
