//! The GPT-OSS transformer (spec §6), in the shape of llama.cpp's `openai-moe.cpp`:
//! embedding → per block { RMSNorm → attention with sinks (sliding on even layers) → residual →
//! RMSNorm → MoE (router top-k, softmax over k, SwiGLU-OAI experts) → residual } → RMSNorm →
//! unembedding.

#[cfg(feature = "cuda")]
mod fast_decode;
mod moe;
#[cfg(feature = "cuda")]
mod prefill;
pub mod profile;
pub mod rope;

use candle_core::{DType, Device, Tensor, D};
use gpt_kernels as k;
use gpt_weights::load::{Experts, LayerWeights};
use gpt_weights::{GptOssConfig, Weights};
use moe::{experts_forward, ExpertGroups};

use crate::batch::Batch;
use crate::error::{EngineError, Result};
use crate::kv::{KvCache, KvPool, Step};
use profile::{Profiler, Stage};
use rope::{Rope, YarnRounding};

/// SwiGLU-OAI constants (spec §6.4).
pub const SWIGLU_ALPHA: f32 = 1.702;
/// SwiGLU-OAI clamp limit.
pub const SWIGLU_LIMIT: f32 = 7.0;

/// Options of the forward pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelOptions {
    /// YaRN correction-dim bounds.
    pub yarn: YarnRounding,
    /// Time each stage (synchronizes the device at stage boundaries).
    pub profile: bool,
    /// Expert matmuls over at least this many (token, expert) slots run per expert as
    /// dequantize + dense GEMM on gathered tokens (prefill); fewer use the fused MXFP4 kernel.
    /// `None`: 64 on CUDA, never on the CPU (whose kernel already groups by expert).
    pub moe_grouped_min_slots: Option<usize>,
    /// On CUDA, run the generic Candle path instead of the fused decode kernels (which need
    /// Q8_0 dense matrices and MXFP4 experts) and of the tensor-core prefill, which reads the
    /// decode kernels' repacked weights.
    pub no_fast_decode: bool,
    /// Launch the fused decode step kernel by kernel instead of replaying a CUDA graph.
    pub no_cuda_graph: bool,
}

/// A loaded GPT-OSS model on one device.
pub struct GptOss {
    w: Weights,
    rope_full: Rope,
    rope_swa: Rope,
    device: Device,
    profiler: Profiler,
    grouped_min_slots: usize,
    #[cfg(feature = "cuda")]
    fast: Option<std::sync::Mutex<fast_decode::FastDecoder>>,
    /// The tensor-core prefill matmuls (present with `fast`, whose repacked weights they read).
    #[cfg(feature = "cuda")]
    prefill: Option<prefill::CudaPrefill>,
}

/// The prefill matmuls of one forward and the plan of its dense GEMMs (all rows, one group).
#[cfg(feature = "cuda")]
type PrefillCtx<'a> = Option<(
    &'a prefill::CudaPrefill,
    gpt_kernels::cuda::prefill::GroupPlan,
)>;
#[cfg(not(feature = "cuda"))]
type PrefillCtx<'a> = Option<(&'a (), ())>;

pub use crate::batch::Logits;

fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    candle_nn::ops::rms_norm(&x.contiguous()?, w, eps)
}

impl GptOss {
    /// Wraps loaded weights.
    pub fn new(w: Weights, device: Device, opts: ModelOptions) -> Self {
        #[cfg(feature = "cuda")]
        let mut w = w;
        let cuda = device.is_cuda();
        let cfg = &w.config;
        let rope_full = Rope::new(cfg, cfg.rope_freq_base, opts.yarn);
        let rope_swa = Rope::new(cfg, cfg.rope_freq_base_swa, opts.yarn);
        #[cfg(feature = "cuda")]
        if cuda {
            // Candle's CUDA QMatMul otherwise quantizes activations to 8 bits (q8_1) for
            // batched inputs, which costs ~1e-2 of relative error on the logits; this makes it
            // dequantize the weights and multiply in f32 (a process-wide switch).
            candle_core::quantized::cuda::set_force_dmmv(true);
        }
        #[cfg(feature = "cuda")]
        let fast = if cuda && !opts.no_fast_decode {
            match fast_decode::FastDecoder::new(
                &mut w,
                &device,
                &rope_full,
                &rope_swa,
                !opts.no_cuda_graph,
            ) {
                Ok(f) => Some(std::sync::Mutex::new(f)),
                Err(e) => {
                    tracing::warn!("single-token decode uses the generic path: {e}");
                    None
                }
            }
        } else {
            None
        };
        #[cfg(feature = "cuda")]
        let prefill = fast.as_ref().and_then(|f| {
            let built = f
                .lock()
                .map_err(|_| candle_core::Error::Msg("fast decoder lock poisoned".into()))
                .and_then(|f| f.prefill_weights());
            built
                .inspect_err(|e| tracing::warn!("prefill uses the generic path: {e}"))
                .ok()
        });
        Self {
            #[cfg(feature = "cuda")]
            fast,
            #[cfg(feature = "cuda")]
            prefill,
            w,
            rope_full,
            rope_swa,
            device,
            profiler: Profiler::new(opts.profile),
            grouped_min_slots: opts.moe_grouped_min_slots.unwrap_or(if cuda {
                64
            } else {
                usize::MAX
            }),
        }
    }

    /// The model's config.
    pub fn config(&self) -> &GptOssConfig {
        &self.w.config
    }

    /// Stage times recorded since the last call (empty unless profiling is on).
    pub fn take_profile(&self) -> Vec<(Stage, std::time::Duration)> {
        self.profiler.take()
    }

    /// Whether single tokens decode through the fused CUDA kernels (else the generic path).
    pub fn fast_decode(&self) -> bool {
        #[cfg(feature = "cuda")]
        return self.fast.is_some();
        #[cfg(not(feature = "cuda"))]
        false
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Vocabulary size (rows of the embedding).
    pub fn vocab_size(&self) -> usize {
        self.w.token_embd.vocab()
    }

    /// A fresh single-sequence KV cache for `ctx` positions and prefill chunks of at most
    /// `max_chunk` tokens.
    pub fn new_cache(&self, ctx: usize, max_chunk: usize) -> Result<KvCache> {
        KvCache::new(self.config(), &self.device, ctx, max_chunk)
    }

    /// Runs `tokens` after what `cache` holds: [`Self::forward`] on a batch of one sequence.
    pub fn forward_seq(&self, tokens: &[u32], cache: &mut KvCache, which: Logits) -> Result<Tensor> {
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
        match self.run(batch, &step, pool) {
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
        #[cfg(feature = "cuda")]
        if let (Some(fast), [c], false) = (&self.fast, step.chunks(), self.profiler.enabled()) {
            if c.t == 1 && batch.chunks()[0].logits != Logits::None {
                let mut f = fast
                    .lock()
                    .map_err(|_| candle_core::Error::Msg("fast decoder lock poisoned".into()))?;
                return Ok(f.step(&self.w, batch.chunks()[0].tokens[0], c, pool)?);
            }
        }
        let tokens = batch.tokens();
        let _span = tracing::debug_span!("forward", seqs = step.chunks().len(), t = tokens.len())
            .entered();
        let p = &self.profiler;
        p.start(&self.device);
        let mut h = self.w.token_embd.lookup(&tokens, &self.device)?; // (t, d)
        #[cfg(feature = "cuda")]
        let pf: PrefillCtx = match &self.prefill {
            Some(pf) => Some((
                pf,
                gpt_kernels::cuda::prefill::GroupPlan::dense(tokens.len(), &self.device)?,
            )),
            None => None,
        };
        #[cfg(not(feature = "cuda"))]
        let pf: PrefillCtx = None;
        p.mark(&self.device, Stage::Embed);
        for (il, lw) in self.w.layers.iter().enumerate() {
            let _l = tracing::trace_span!("layer", il).entered();
            let a = rms_norm(&h, &lw.attn_norm, self.config().rms_eps)?;
            let attn = self.attention(il, lw, &a, step, pool, &pf)?;
            h = (h + attn)?;
            let m = rms_norm(&h, &lw.post_attention_norm, self.config().rms_eps)?;
            h = (&h + self.moe(lw, &m)?)?;
        }
        let rows = batch.logit_rows();
        let vocab = self.vocab_size();
        if rows.is_empty() {
            return Ok(Tensor::zeros((0, vocab), DType::F32, &self.device)?);
        }
        let h = if rows.len() == tokens.len() {
            h
        } else {
            h.index_select(&Tensor::new(rows.as_slice(), &self.device)?, 0)? // (rows, d)
        };
        let h = rms_norm(&h, &self.w.output_norm, self.config().rms_eps)?;
        let logits = match &pf {
            #[cfg(feature = "cuda")]
            Some((pf, _)) => pf.logits(&h)?,
            _ => self.w.output.forward(&h)?.to_dtype(DType::F32)?,
        };
        p.mark(&self.device, Stage::Output);
        Ok(logits)
    }

    /// Attention of layer `il` on `a (t, d)`; returns `(t, d)`.
    fn attention(
        &self,
        il: usize,
        lw: &LayerWeights,
        a: &Tensor,
        step: &Step,
        pool: &KvPool,
        pf: &PrefillCtx,
    ) -> Result<Tensor> {
        let cfg = self.config();
        let (hq, hkv, hd) = (cfg.n_head, cfg.n_head_kv, cfg.head_dim);
        let (q, kx, v) = match pf {
            #[cfg(feature = "cuda")]
            Some((pf, plan)) => {
                let qkv = pf.qkv(il, a, plan)?; // (t, (hq + 2 hkv) hd)
                let (nq, nkv) = (hq * hd, hkv * hd);
                (
                    qkv.narrow(1, 0, nq)?.contiguous()?,
                    qkv.narrow(1, nq, nkv)?.contiguous()?,
                    qkv.narrow(1, nq + nkv, nkv)?,
                )
            }
            _ => (
                lw.attn_q.forward(a)?.broadcast_add(&lw.attn_q_b)?,
                lw.attn_k.forward(a)?.broadcast_add(&lw.attn_k_b)?,
                lw.attn_v.forward(a)?.broadcast_add(&lw.attn_v_b)?,
            ),
        };
        let sliding = cfg.is_sliding(il);
        let rope = if sliding {
            &self.rope_swa
        } else {
            &self.rope_full
        };
        let window = sliding.then_some(cfg.sliding_window);
        let scale = 1.0 / (hd as f32).sqrt();
        let mut outs = Vec::with_capacity(step.chunks().len());
        let mut at = 0;
        for c in step.chunks() {
            let q = q.narrow(0, at, c.t)?.reshape((1, c.t, hq, hd))?; // (1, t, hq, d)
            let kx = kx.narrow(0, at, c.t)?.reshape((1, c.t, hkv, hd))?; // (1, t, hkv, d)
            let v = v.narrow(0, at, c.t)?.reshape((c.t, hkv, hd))?; // (t, hkv, d)
            at += c.t;
            let q = rope.apply(&q, c.pos)?;
            let kx = rope.apply(&kx, c.pos)?;
            self.profiler.mark(&self.device, Stage::QkvRope);
            pool.write(il, c, &kx.squeeze(0)?, &v)?;
            let (k_all, v_all, kv_offset) = pool.gather(il, c)?; // (1, s, hkv, d)
            self.profiler.mark(&self.device, Stage::KvAppend);
            let o = match pf {
                #[cfg(feature = "cuda")]
                Some(_) if c.t >= 2 && k::cuda::attention::tf32_prefill_fits(hq, hkv, hd) => {
                    let params = k::cuda::AttentionParams {
                        scale,
                        window: window.unwrap_or(0),
                        q_offset: c.pos,
                        kv_offset,
                    };
                    k::cuda::attention::attention_prefill_tf32(
                        &q,
                        &k_all,
                        &v_all,
                        &lw.attn_sinks,
                        &params,
                    )?
                }
                _ => k::attention_with_sinks(
                    &q,
                    &k_all,
                    &v_all,
                    &lw.attn_sinks,
                    scale,
                    window,
                    c.pos,
                    kv_offset,
                )?,
            }; // (1, t, hq, d)
            outs.push(o.reshape((c.t, hq * hd))?);
        }
        let o = Tensor::cat(&outs, 0)?; // (t, hq*d)
        self.profiler.mark(&self.device, Stage::Attention);
        let out = match pf {
            #[cfg(feature = "cuda")]
            Some((pf, plan)) => pf.out(il, &o, plan)?,
            _ => lw
                .attn_output
                .forward(&o)?
                .broadcast_add(&lw.attn_output_b)?,
        };
        self.profiler.mark(&self.device, Stage::AttnOut);
        Ok(out)
    }

    /// The MoE block on `m (t, d)`; returns `(t, d)`.
    fn moe(&self, lw: &LayerWeights, m: &Tensor) -> Result<Tensor> {
        let cfg = self.config();
        let logits = m
            .matmul(&lw.ffn_gate_inp.t()?)?
            .broadcast_add(&lw.ffn_gate_inp_b)?; // (t, e)
        let (ids, weights) = k::router_topk_softmax(&logits, cfg.n_expert_used)?; // (t, k) u32, f32
        self.profiler.mark(&self.device, Stage::Router);
        #[cfg(feature = "cuda")]
        if matches!(lw.ffn_gate_exps, Experts::Mxfp4Planar { .. }) {
            let out = prefill::moe_experts(lw, m, &ids, &weights, cfg.n_expert)?; // (t, d)
            self.profiler.mark(&self.device, Stage::Experts);
            return Ok(out);
        }
        let mxfp4 = matches!(lw.ffn_gate_exps, Experts::Mxfp4 { .. });
        let groups = if mxfp4 && ids.elem_count() >= self.grouped_min_slots {
            Some(ExpertGroups::new(&ids, cfg.n_expert)?)
        } else {
            None
        };
        let gate = experts_forward(
            m,
            &lw.ffn_gate_exps,
            &lw.ffn_gate_exps_b,
            &ids,
            groups.as_ref(),
        )?; // (t, k, ff)
        let up = experts_forward(m, &lw.ffn_up_exps, &lw.ffn_up_exps_b, &ids, groups.as_ref())?; // (t, k, ff)
        let act = k::swiglu_oai(&gate, &up, SWIGLU_ALPHA, SWIGLU_LIMIT)?; // (t, k, ff)
        let down = experts_forward(
            &act,
            &lw.ffn_down_exps,
            &lw.ffn_down_exps_b,
            &ids,
            groups.as_ref(),
        )?; // (t, k, d)
        self.profiler.mark(&self.device, Stage::Experts);
        let out = down.broadcast_mul(&weights.unsqueeze(D::Minus1)?)?.sum(1)?; // (t, d)
        self.profiler.mark(&self.device, Stage::Combine);
        Ok(out)
    }
}

/// Helper used by tests: logits of every position of `tokens` in one prefill.
pub fn prefill_logits(model: &GptOss, tokens: &[u32]) -> Result<Tensor> {
    let mut cache = model.new_cache(tokens.len(), tokens.len())?;
    model.forward_seq(tokens, &mut cache, Logits::All)
}
