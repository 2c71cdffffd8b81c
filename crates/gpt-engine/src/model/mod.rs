//! The GPT-OSS transformer (spec §6), in the shape of llama.cpp's `openai-moe.cpp`:
//! embedding → per block { RMSNorm → attention with sinks (sliding on even layers) → residual →
//! RMSNorm → MoE (router top-k, softmax over k, SwiGLU-OAI experts) → residual } → RMSNorm →
//! unembedding — over a [`Batch`] of rows from several sequences, each reading its own KV
//! blocks. The weights' device form is chosen once (`prepare`); dispatch lives in their
//! types (`linear`, `experts`, `attend`), so the layer loop below is the only one.

mod attend;
mod experts;
#[cfg(feature = "cuda")]
mod fast_decode;
mod fused;
mod linear;
mod moe;
#[cfg(feature = "cuda")]
mod prefill;
mod prepare;
pub mod probe;
pub mod profile;
#[cfg(feature = "cuda")]
mod repack;
pub mod rope;

use candle_core::{DType, Device, Tensor};
use gpt_weights::{GptOssConfig, Weights};

use crate::batch::Batch;
use crate::error::{EngineError, Result};
use crate::kv::{KvCache, KvPool, KvType, Step};
use attend::{AttnInput, AttnKernel};
use fused::FusedStep;
use linear::{Qkv, RowPlan};
use prepare::{Layer, Prepared};
use probe::RouterProbe;
use profile::{Profiler, Stage};
use rope::{Positions, Rope, YarnRounding};

pub use gpt_kernels::Precision;

/// SwiGLU-OAI constants (spec §6.4).
pub const SWIGLU_ALPHA: f32 = 1.702;
/// SwiGLU-OAI clamp limit.
pub const SWIGLU_LIMIT: f32 = 7.0;

/// On CUDA's fast path, MoE layers of fewer (token, expert) slots than this (a batched decode
/// of up to 32 sequences at top-4) run the row kernels; more, the tensor-core GEMMs
/// (measured on the H200: the row kernels ahead at 8 and 16 sequences, even at 32, behind at
/// 64).
pub const FAST_GROUPED_MIN_SLOTS: usize = 129;

/// Options of the forward pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelOptions {
    /// YaRN correction-dim bounds.
    pub yarn: YarnRounding,
    /// Time each stage (synchronizes the device at stage boundaries).
    pub profile: bool,
    /// Record every token's router margin per MoE layer ([`probe::RouterProbe`]; the layer
    /// loop runs for every step, also where the fused decode would).
    pub probe_router: bool,
    /// MoE layers of at least this many (token, expert) slots run their experts as grouped
    /// GEMMs (CUDA's generic path: dequantize + dense GEMM per expert; the fast path: the
    /// tensor-core kernels); fewer run kernels that read each expert's weights once and loop
    /// over its tokens (the fused MXFP4 kernel; on the fast path the `dp4a` row kernels).
    /// `None`: 64 on CUDA's generic path, [`FAST_GROUPED_MIN_SLOTS`] on its fast path, never on
    /// the CPU (whose kernel already groups by expert).
    pub moe_grouped_min_slots: Option<usize>,
    /// On CUDA, run the generic Candle path instead of the fused decode kernels (which need
    /// Q8_0 dense matrices and MXFP4 experts) and of the tensor-core prefill, which reads the
    /// decode kernels' repacked weights.
    pub no_fast_decode: bool,
    /// Launch the fused decode step kernel by kernel instead of replaying a CUDA graph.
    pub no_cuda_graph: bool,
    /// How the CPU's quantized matmuls treat activations (exact f32, or int8 as llama.cpp).
    pub cpu_precision: gpt_kernels::Precision,
    /// Element type of the KV caches made for this model ([`GptOss::new_cache`], the engine's
    /// pool); `None`: [`KvType::default_for`] the device (f16 on CUDA, f32 on the CPU).
    pub kv_type: Option<KvType>,
}

impl ModelOptions {
    /// The KV element type these options give on `device`.
    pub fn kv_type_on(&self, device: &Device) -> KvType {
        self.kv_type.unwrap_or_else(|| KvType::default_for(device))
    }
}

/// A loaded GPT-OSS model on one device.
pub struct GptOss {
    cfg: GptOssConfig,
    p: Prepared,
    rope_full: Rope,
    rope_swa: Rope,
    attn: AttnKernel,
    device: Device,
    profiler: Profiler,
    probe: RouterProbe,
    fused: FusedStep,
    kv_type: KvType,
}

pub use crate::batch::Logits;

fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, w, eps)
}

impl GptOss {
    /// Builds the model from loaded weights: their device form is chosen here, once.
    pub fn new(w: Weights, device: Device, opts: ModelOptions) -> Result<Self> {
        let cfg = w.config.clone();
        let rope_full = Rope::new(&cfg, cfg.rope_freq_base, opts.yarn);
        let rope_swa = Rope::new(&cfg, cfg.rope_freq_base_swa, opts.yarn);
        let p = Prepared::new(w, &device, &opts)?;
        let attn = AttnKernel::choose(p.tensor_cores(), (cfg.n_head, cfg.n_head_kv, cfg.head_dim));
        let fused = FusedStep::new(&p, &cfg, &device, (&rope_full, &rope_swa), &opts);
        let kv_type = opts.kv_type_on(&device);
        Ok(Self {
            kv_type,
            cfg,
            p,
            rope_full,
            rope_swa,
            attn,
            device,
            profiler: Profiler::new(opts.profile),
            probe: RouterProbe::new(opts.probe_router),
            fused,
        })
    }

    /// Bytes the weights hold on the device in their prepared form (the embedding, kept in
    /// host memory, excluded).
    pub fn weight_bytes(&self) -> u64 {
        self.p.device_bytes()
    }

    /// The model's config.
    pub fn config(&self) -> &GptOssConfig {
        &self.cfg
    }

    /// Stage times recorded since the last call (empty unless profiling is on).
    pub fn take_profile(&self) -> Vec<(Stage, std::time::Duration)> {
        self.profiler.take()
    }

    /// Router gaps recorded since the last call, `[MoE layer run][token row]` (empty unless
    /// [`ModelOptions::probe_router`] is on).
    pub fn take_router_gaps(&self) -> Vec<Vec<probe::RouterGap>> {
        self.probe.take()
    }

    /// Whether a single decoding sequence runs the fused CUDA step (else the batched path).
    pub fn fast_decode(&self) -> bool {
        self.fused.available()
    }

    /// Whether the matmuls run on the CUDA tensor-core form of the weights.
    pub fn tensor_cores(&self) -> bool {
        self.p.tensor_cores()
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Vocabulary size (rows of the embedding).
    pub fn vocab_size(&self) -> usize {
        self.p.embd.vocab()
    }

    /// A fresh single-sequence KV cache for `ctx` positions and prefill chunks of at most
    /// `max_chunk` tokens, of [`Self::kv_type`].
    pub fn new_cache(&self, ctx: usize, max_chunk: usize) -> Result<KvCache> {
        KvCache::new(self.config(), &self.device, ctx, max_chunk, self.kv_type)
    }

    /// The element type of the KV caches made for this model.
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// Runs `tokens` after what `cache` holds: [`Self::forward`] on a batch of one sequence.
    pub fn forward_seq(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        which: Logits,
    ) -> Result<Tensor> {
        let (pool, seq) = cache.parts();
        self.forward(&Batch::single(seq, tokens, which)?, pool)
    }

    /// Runs every chunk of `batch` after what `pool` holds for its sequence, appending the new
    /// keys and values (committed only if the whole forward succeeds). Returns f32 logits
    /// `(rows, vocab)` for the rows the batch asks for, in batch order.
    pub fn forward(&self, batch: &Batch, pool: &mut KvPool) -> Result<Tensor> {
        if batch.is_empty() {
            return Err(EngineError::EmptyInput);
        }
        let step = pool.begin(batch)?;
        let out = if self.device.is_cpu() {
            // On a rayon worker: every kernel's parallel loop then starts and joins inside the
            // pool instead of handing off to it and sleeping, once per op (~30% of a decode
            // GEMV's time on a 2-core VM).
            rayon::scope(|_| self.run(batch, &step, pool))
        } else {
            self.run(batch, &step, pool)
        };
        match out {
            Ok(l) => {
                pool.commit(step);
                Ok(l)
            }
            Err(e) => {
                pool.abort(step);
                Err(e)
            }
        }
    }

    /// The forward of a begun step.
    fn run(&self, batch: &Batch, step: &Step, pool: &KvPool) -> Result<Tensor> {
        if let ([c], [chunk]) = (step.chunks(), batch.chunks()) {
            if c.t == 1
                && chunk.logits != Logits::None
                && self.fused.available()
                && !self.profiler.enabled()
                && !self.probe.enabled()
            {
                return self.fused.step(&self.p, chunk.tokens[0], c, pool);
            }
        }
        let tokens = batch.tokens();
        let _span =
            tracing::debug_span!("forward", seqs = step.chunks().len(), t = tokens.len()).entered();
        let p = &self.profiler;
        p.start(&self.device);
        let eps = self.cfg.rms_eps;
        let mut h = self.p.embd.lookup(&tokens, &self.device)?; // (t, d)
        let rows = RowPlan::new(tokens.len(), &self.device, self.p.tensor_cores())?;
        let at = StepRows::default();
        p.mark(&self.device, Stage::Embed);
        for (il, l) in self.p.layers.iter().enumerate() {
            let _l = tracing::trace_span!("layer", il).entered();
            let a = rms_norm(&h, &l.attn_norm, eps)?;
            h = (h + self.attention(il, l, &a, step, pool, &rows, &at)?)?;
            let m = rms_norm(&h, &l.post_norm, eps)?;
            h = (&h + l.moe.forward(&m, (p, &self.probe), &self.device)?)?;
        }
        let want = batch.logit_rows();
        if want.is_empty() {
            return Ok(Tensor::zeros(
                (0, self.vocab_size()),
                DType::F32,
                &self.device,
            )?);
        }
        let h = if want.len() == tokens.len() {
            h
        } else {
            h.index_select(&Tensor::new(want.as_slice(), &self.device)?, 0)? // (rows, d)
        };
        let h = rms_norm(&h, &self.p.output_norm, eps)?;
        let out_rows = RowPlan::new(want.len(), &self.device, self.p.tensor_cores())?;
        let logits = self.p.output.forward(&h, &out_rows)?.to_dtype(DType::F32)?;
        p.mark(&self.device, Stage::Output);
        Ok(logits)
    }

    /// Attention of layer `il` on `a (t, d)` for `step`'s rows (`at`), each chunk of `step`
    /// against its own sequence's keys and values: the one-token chunks together through
    /// their block tables where the kernel allows ([`AttnKernel::pages_decodes`]), longer
    /// chunks each over their gathered keys. Returns `(t, d)`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        il: usize,
        l: &Layer,
        a: &Tensor,
        step: &Step,
        pool: &KvPool,
        rows: &RowPlan,
        at: &StepRows,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (hq, hkv, hd) = (cfg.n_head, cfg.n_head_kv, cfg.head_dim);
        let t = a.dim(0)?;
        let sliding = cfg.is_sliding(il);
        let rope = if sliding {
            &self.rope_swa
        } else {
            &self.rope_full
        };
        let window = sliding.then_some(cfg.sliding_window);
        let scale = 1.0 / (hd as f32).sqrt();
        let q = match (&l.qkv, self.attn.pages_decodes()) {
            // CUDA's fast path: RoPE and the pool write in one kernel on the stacked output.
            (Qkv::Fused(lin), true) => {
                let qkv = lin.forward(a, rows)?; // (t, (hq + 2 hkv) hd)
                self.attn
                    .rope_kv(&qkv, rope, pool, il, step, (hq, hkv, hd))? // (t, hq, hd)
            }
            _ => {
                let (q, kx, v) = l.qkv.forward(a, rows, (hq * hd, hkv * hd))?; // (t, hq hd), (t, hkv hd) x2
                let at = at.positions(step, &self.device)?;
                let q = rope.apply(&q.reshape((1, t, hq, hd))?, at)?; // (1, t, hq, hd)
                let kx = rope.apply(&kx.reshape((1, t, hkv, hd))?, at)?; // (1, t, hkv, hd)
                self.profiler.mark(&self.device, Stage::QkvRope);
                pool.write(il, step, &kx.squeeze(0)?, &v.reshape((t, hkv, hd))?)?;
                q.squeeze(0)? // (t, hq, hd)
            }
        };
        self.profiler.mark(&self.device, Stage::KvAppend);
        let paged = match self.attn.pages_decodes() {
            true => pool.decode_rows(il, step)?,
            false => None,
        };
        let chunks = step.chunks();
        let all_decodes = paged.is_some_and(|r| r.rows() == t);
        // The one-token chunks' outputs `(decodes, hq, hd)`, in batch order.
        let decoded = match paged {
            Some(r) => {
                let qd = if all_decodes {
                    q.clone()
                } else {
                    q.index_select(at.decode_index(step, &self.device)?, 0)?
                };
                let (kb, vb) = pool.layer_buffers(il);
                Some(self.attn.paged(&qd, kb, vb, &l.sinks, r, scale, window)?)
            }
            None => None,
        };
        let o = match decoded {
            Some(o) if all_decodes => o,
            _ => {
                let mut outs = Vec::with_capacity(chunks.len());
                let (mut row, mut dec) = (0, 0);
                for c in chunks {
                    if let (1, Some(o)) = (c.t, &decoded) {
                        outs.push(o.narrow(0, dec, 1)?);
                        dec += 1;
                    } else {
                        let qc = q.narrow(0, row, c.t)?.unsqueeze(0)?; // (1, t, hq, d)
                        let (k_all, v_all, kv_offset) = pool.gather(il, c)?; // (1, s, hkv, d)
                        let o = self.attn.run(&AttnInput {
                            q: &qc,
                            k: &k_all,
                            v: &v_all,
                            sinks: &l.sinks,
                            scale,
                            window,
                            q_offset: c.pos,
                            kv_offset,
                        })?; // (1, t, hq, d)
                        outs.push(o.squeeze(0)?);
                    }
                    row += c.t;
                }
                Tensor::cat(&outs, 0)? // (t, hq, d)
            }
        };
        let o = o.reshape((t, hq * hd))?;
        self.profiler.mark(&self.device, Stage::Attention);
        let out = l.attn_out.forward(&o, rows)?; // (t, d)
        self.profiler.mark(&self.device, Stage::AttnOut);
        Ok(out)
    }
}

/// What every layer of one forward derives from its step, made when a layer first asks: the
/// rows' positions (the generic RoPE) and the batch rows of the one-token chunks (a mixed
/// step's paged attention).
#[derive(Default)]
struct StepRows {
    positions: std::cell::OnceCell<Positions>,
    decode_index: std::cell::OnceCell<Tensor>,
}

impl StepRows {
    fn positions(&self, step: &Step, device: &Device) -> Result<&Positions> {
        if self.positions.get().is_none() {
            let p = Positions::of(step.chunks().iter().map(|c| (c.pos, c.t)), device)?;
            let _ = self.positions.set(p);
        }
        self.positions
            .get()
            .ok_or_else(|| EngineError::Other("forward: no positions".into()))
    }

    /// U32 `(decodes)`: the batch row of each one-token chunk, in order.
    fn decode_index(&self, step: &Step, device: &Device) -> Result<&Tensor> {
        if self.decode_index.get().is_none() {
            let mut idx = Vec::new();
            let mut row = 0u32;
            for c in step.chunks() {
                if c.t == 1 {
                    idx.push(row);
                }
                row += c.t as u32;
            }
            let n = idx.len();
            let _ = self.decode_index.set(Tensor::from_vec(idx, n, device)?);
        }
        self.decode_index
            .get()
            .ok_or_else(|| EngineError::Other("forward: no decode rows".into()))
    }
}

/// Helper used by tests: logits of every position of `tokens` in one prefill.
pub fn prefill_logits(model: &GptOss, tokens: &[u32]) -> Result<Tensor> {
    let mut cache = model.new_cache(tokens.len(), tokens.len())?;
    model.forward_seq(tokens, &mut cache, Logits::All)
}
