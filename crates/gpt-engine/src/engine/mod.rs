//! The engine: a model, its KV pool and a continuous-batching scheduler on a worker thread,
//! serving many requests at once. [`Engine::submit`] returns a [`RequestHandle`] whose events
//! can be read from sync code ([`RequestHandle::blocking_next`]) or from tokio
//! ([`RequestHandle::next`]); dropping the handle cancels the request within one step.
//!
//! ```no_run
//! use gpt_engine::engine::{Engine, EngineOptions, Event, Request};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::load("gpt-oss-20b-mxfp4.gguf".as_ref(), EngineOptions::default())?;
//! let tok = engine.tokenizer().expect("the GGUF has a tokenizer");
//! let prompt = tok.encode("The capital of France is", false)?;
//! let mut h = engine.submit(Request::new(prompt, 16))?;
//! while let Some(e) = h.blocking_next() {
//!     match e {
//!         Event::Token(t) => print!("{}", t.text),
//!         Event::Text(t) => print!("{t}"),
//!         Event::Finished { reason, usage } => println!("\n{reason:?} {usage:?}"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

mod request;
mod stop;
mod worker;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

use candle_core::Device;
use gpt_weights::plan::DenseMode;
use gpt_weights::GptOssConfig;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::error::{EngineError, Result};
use crate::kv::{KvPool, KvPoolConfig};
use crate::loader::{load_any, LoadConfig};
use crate::model::{GptOss, ModelOptions};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::tokenizer::Tokenizer;
pub use request::{
    Event, FinishReason, Request, TokenEvent, TokenGuide, Usage, MAX_STOP_STRINGS, MAX_TOP_LOGPROBS,
};
pub use stop::StopText;
use worker::{Command, Counters, Limits};

/// How to run an engine.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Where the model runs.
    pub device: Device,
    /// Longest sequence (prompt + generated); `None`: the model's training context.
    pub ctx: Option<usize>,
    /// Bytes of KV memory; `None`: enough for `max_seqs` full contexts, at most half of the
    /// free memory.
    pub kv_memory: Option<u64>,
    /// Most sequences decoding at once.
    pub max_seqs: usize,
    /// Most tokens (rows) per step.
    pub max_batch_tokens: usize,
    /// Most requests waiting for admission; more are refused.
    pub max_queue: usize,
    /// Reuse cached prompt prefixes.
    pub prefix_cache: bool,
    /// How dense matrices are held; `None`: the file's quantized types on CUDA (what the
    /// fused kernels read), f32 on the CPU (exact).
    pub dense: Option<DenseMode>,
    /// Forward options.
    pub model: ModelOptions,
    /// On a GPU, keep the MoE blocks of the first this many layers in host memory and run them
    /// on the CPU ([`LoadConfig::cpu_moe`]).
    pub cpu_moe: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            ctx: None,
            kv_memory: None,
            max_seqs: 16,
            max_batch_tokens: 2048,
            max_queue: 256,
            prefix_cache: true,
            dense: None,
            model: ModelOptions::default(),
            cpu_moe: 0,
        }
    }
}

/// How dense matrices are held when not asked: in the file's quantized types, on every
/// device (what the CUDA fused decode and tensor-core prefill read; on the CPU, Q8_0 blocks
/// multiplied in registers, other types dequantized to f32 at exact precision).
pub fn default_dense_mode(_device: &Device) -> DenseMode {
    DenseMode::Quantized
}

/// What the handles share with the worker.
struct Shared {
    commands: Mutex<Sender<Command>>,
    counters: Arc<Counters>,
    next_id: AtomicU64,
    max_queue: usize,
    ctx: usize,
    vocab: usize,
    config: GptOssConfig,
    kv: KvPoolConfig,
    tokenizer: Option<Arc<Tokenizer>>,
    in_flight: AtomicUsize,
}

/// A running engine (cheap to clone; the worker stops when the last clone and handle are gone).
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("ctx", &self.shared.ctx)
            .field("kv", &self.shared.kv)
            .finish()
    }
}

/// The bytes the pool gets when `kv_memory` is not given.
fn default_kv_bytes(model: &GptOss, ctx: usize, max_seqs: usize) -> u64 {
    let (cfg, device) = (model.config(), model.device());
    let bs = crate::kv::DEFAULT_BLOCK_SIZE as u64;
    let [fb, sb] = KvPoolConfig::block_bytes(cfg, bs as usize, model.kv_type());
    let want = (ctx as u64).div_ceil(bs) * max_seqs as u64 * (fb + sb);
    let free = free_memory(device).map(|f| f / 2);
    match free {
        Some(f) => want.min(f).max((ctx as u64).div_ceil(bs) * (fb + sb)),
        None => want,
    }
}

/// Free memory of `device` as its allocator reports it (the host: `MemAvailable`).
pub fn free_memory(device: &Device) -> Option<u64> {
    if device.is_cpu() {
        return gpt_weights::plan::host_available_bytes();
    }
    #[cfg(feature = "cuda")]
    if device.is_cuda() {
        return candle_core::cuda_backend::cudarc::driver::result::mem_get_info()
            .ok()
            .map(|(free, _)| free as u64);
    }
    None
}

impl Engine {
    /// Loads a GGUF (or a Hugging Face checkpoint directory) and starts the engine on it.
    pub fn load(path: &Path, opts: EngineOptions) -> Result<Self> {
        Self::load_with_progress(path, opts, None)
    }

    /// [`Engine::load`], reporting `(bytes loaded, total)`.
    pub fn load_with_progress(
        path: &Path,
        opts: EngineOptions,
        progress: Option<&mut dyn FnMut(u64, u64)>,
    ) -> Result<Self> {
        let dense = opts
            .dense
            .unwrap_or_else(|| default_dense_mode(&opts.device));
        let lc = LoadConfig {
            dense,
            model: opts.model,
            ctx: opts.ctx.unwrap_or(4096),
            chunk: opts.max_batch_tokens,
            seqs: opts.max_seqs,
            cpu_moe: opts.cpu_moe,
        };
        let (model, file) = load_any(path, &opts.device, &lc, progress)?;
        let tok = match &file {
            Some(f) => Some(
                Tokenizer::from_gguf_metadata(f.metadata())
                    .map_err(|e| EngineError::Tokenizer(e.to_string()))?,
            ),
            // A Hugging Face checkpoint directory has its tokenizer beside the weights.
            None => Some(
                Tokenizer::from_tokenizer_json(path.join("tokenizer.json"))
                    .map_err(|e| EngineError::Tokenizer(e.to_string()))?,
            ),
        };
        Self::new(model, tok, opts)
    }

    /// Starts an engine on a loaded model.
    pub fn new(model: GptOss, tokenizer: Option<Tokenizer>, opts: EngineOptions) -> Result<Self> {
        let cfg = model.config().clone();
        let ctx = opts.ctx.unwrap_or(cfg.n_ctx_train.max(1));
        let bytes = opts
            .kv_memory
            .unwrap_or_else(|| default_kv_bytes(&model, ctx, opts.max_seqs));
        let kv = KvPoolConfig::from_budget(
            &cfg,
            bytes,
            opts.max_seqs,
            opts.max_batch_tokens,
            opts.prefix_cache,
            model.kv_type(),
        )?;
        let pool = KvPool::new(&cfg, model.device(), kv)?;
        // A sequence never needs more positions than the pool holds (so it never preempts
        // itself forever).
        let ctx = ctx.min(kv.capacity_tokens());
        let sched = Scheduler::new(SchedulerConfig {
            max_batch_tokens: opts.max_batch_tokens,
            max_seqs: opts.max_seqs,
        });
        let tokenizer = tokenizer.map(Arc::new);
        let counters = Arc::new(Counters::default());
        let (tx, rx) = channel();
        let (tok, c) = (tokenizer.clone(), counters.clone());
        let vocab = model.vocab_size();
        std::thread::Builder::new()
            .name("gptoss-engine".into())
            .spawn(move || worker::run(model, pool, sched, tok, Limits { ctx }, rx, c))
            .map_err(|e| EngineError::Other(format!("engine thread: {e}")))?;
        tracing::info!(ctx, ?kv, "engine started");
        Ok(Self {
            shared: Arc::new(Shared {
                commands: Mutex::new(tx),
                counters,
                next_id: AtomicU64::new(0),
                max_queue: opts.max_queue,
                ctx,
                vocab,
                config: cfg,
                kv,
                tokenizer,
                in_flight: AtomicUsize::new(0),
            }),
        })
    }

    /// The model's config.
    pub fn config(&self) -> &GptOssConfig {
        &self.shared.config
    }

    /// The tokenizer from the model file, if it has one.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.shared.tokenizer.as_deref()
    }

    /// The tokenizer, shared.
    pub fn tokenizer_handle(&self) -> Option<Arc<Tokenizer>> {
        self.shared.tokenizer.clone()
    }

    /// Longest sequence (prompt + generated) a request may reach.
    pub fn context(&self) -> usize {
        self.shared.ctx
    }

    /// The KV pool's sizes.
    pub fn kv_config(&self) -> KvPoolConfig {
        self.shared.kv
    }

    /// Requests waiting for admission.
    pub fn queued(&self) -> usize {
        self.shared.counters.queued.load(Ordering::Relaxed)
    }

    /// Sequences preempted (freed, to be recomputed) so far.
    pub fn preemptions(&self) -> usize {
        self.shared.counters.preempted.load(Ordering::Relaxed)
    }

    /// Requests submitted and not finished.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Validates `req` and queues it; refuses it when the queue is full or the prompt does not
    /// fit the context.
    pub fn submit(&self, req: Request) -> Result<RequestHandle> {
        let sh = &self.shared;
        req.validate(sh.vocab)?;
        if req.prompt.len() >= sh.ctx {
            return Err(EngineError::ContextOverflow {
                prompt: req.prompt.len(),
                max_new: 0,
                ctx: sh.ctx,
            });
        }
        let q = &sh.counters.queued;
        if q.fetch_add(1, Ordering::Relaxed) >= sh.max_queue {
            q.fetch_sub(1, Ordering::Relaxed);
            return Err(EngineError::QueueFull {
                limit: sh.max_queue,
            });
        }
        let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events) = unbounded_channel();
        let sent = sh
            .commands
            .lock()
            .map_err(|_| EngineError::Stopped)?
            .send(Command::Submit {
                id,
                req: Box::new(req),
                events: events_tx,
            });
        if sent.is_err() {
            q.fetch_sub(1, Ordering::Relaxed);
            return Err(EngineError::Stopped);
        }
        sh.in_flight.fetch_add(1, Ordering::Relaxed);
        Ok(RequestHandle {
            id,
            events,
            shared: self.shared.clone(),
            done: false,
        })
    }
}

/// A submitted request: its events, in order, ending with [`Event::Finished`].
pub struct RequestHandle {
    id: u64,
    events: UnboundedReceiver<Event>,
    shared: Arc<Shared>,
    done: bool,
}

impl std::fmt::Debug for RequestHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestHandle")
            .field("id", &self.id)
            .finish()
    }
}

impl RequestHandle {
    /// The request's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn seen(&mut self, e: Option<Event>) -> Option<Event> {
        match &e {
            Some(Event::Finished { .. }) | None if !self.done => {
                self.done = true;
                self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
        e
    }

    /// The next event, waiting for it (not from inside an async runtime: use [`Self::next`]).
    pub fn blocking_next(&mut self) -> Option<Event> {
        let e = if self.done {
            None
        } else {
            self.events.blocking_recv()
        };
        self.seen(e)
    }

    /// The next event.
    pub async fn next(&mut self) -> Option<Event> {
        let e = if self.done {
            None
        } else {
            self.events.recv().await
        };
        self.seen(e)
    }

    /// Asks the engine to stop this request; [`Event::Finished`] with
    /// [`FinishReason::Cancelled`] follows within one step.
    pub fn cancel(&self) {
        if let Ok(c) = self.shared.commands.lock() {
            c.send(Command::Cancel(self.id)).ok();
        }
    }

    /// Reads every event to the end: the generated ids, the text, why it finished, the usage.
    pub fn collect(mut self) -> Output {
        let mut out = Output::default();
        while let Some(e) = self.blocking_next() {
            match e {
                Event::Token(t) => {
                    out.tokens.push(t.id);
                    out.text.push_str(&t.text);
                }
                Event::Text(t) => out.text.push_str(&t),
                Event::Finished { reason, usage } => {
                    out.finish = Some(reason);
                    out.usage = usage;
                }
                Event::Started { .. } | Event::Channel { .. } => {}
            }
        }
        out
    }
}

impl Drop for RequestHandle {
    fn drop(&mut self) {
        if !self.done {
            self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.done = true;
            self.cancel();
        }
    }
}

/// A whole request's result.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Generated ids (the stop token included).
    pub tokens: Vec<u32>,
    /// Their text.
    pub text: String,
    /// Why it ended (`None` if the engine stopped first).
    pub finish: Option<FinishReason>,
    /// Counts.
    pub usage: Usage,
}
