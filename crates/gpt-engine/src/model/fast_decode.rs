//! The fused CUDA decode step: one token through the whole model in 10 kernels per layer
//! (gpt-kernels' `decode.cu`) on buffers allocated once, replayed as a CUDA graph.
//!
//! Per layer: RMSNorm+quantize → QKV GEMV + bias + RoPE, K/V written into the cache row →
//! split attention with sinks → combine + quantize → O GEMV + bias + residual → RMSNorm +
//! quantize → router top-k softmax → gate/up GEMV + biases + SwiGLU → quantize → down GEMV +
//! bias + routing weights + residual. Then RMSNorm → output GEMV into the logits.
//!
//! It reads the weights' fast form (`prepare`/`repack`: Q8 split matrices with QKV stacked,
//! planar MXFP4 experts) and the paged KV pool: each layer's K/V row is written into the
//! sequence's block and attention reads the blocks through the sequence's block table. The
//! per-step inputs (the embedding row, the position, each layer's KV row and offset, the block
//! tables) are uploaded before the graph launches; the captured graph is keyed by the pool's
//! buffers and each layer's key-split count (bucketed by powers of two), so it is captured
//! again only when a sequence doubles.
//!
//! [`FastDecoder::new`] says why it does not apply to weights in another form.

use candle_core::cuda_backend::cudarc::driver::{sys, CudaGraph, CudaSlice, DevicePtr};
use candle_core::{DType, Device, Tensor};
use gpt_kernels::cuda::decode::{
    tensor_ptr as dptr, AttnRows, CombineOut, DecodeKernels, DevPtr, KvPtrs, MxPtrs, Q8Ptrs, QVec,
    DEC_MAX_SPLIT,
};
use gpt_weights::GptOssConfig;

use super::experts::{ExpertsForm, Planar};
use super::linear::{Linear, Qkv};
use super::prepare::Prepared;
use super::rope::Rope;
use super::{SWIGLU_ALPHA, SWIGLU_LIMIT};
use crate::kv::{ChunkKv, KvPool};

type CResult<T> = candle_core::Result<T>;

/// Most splits of one head's keys.
const MAX_SPLIT: usize = DEC_MAX_SPLIT;
/// Keys per split the split count aims for.
const KEYS_PER_SPLIT: usize = 128;
/// Keys a full layer's split count assumes at least.
const MIN_FULL_KEYS: usize = 512;

fn err(msg: String) -> candle_core::Error {
    candle_core::Error::Msg(format!("fast decode: {msg}"))
}

fn sptr<T>(s: &CudaSlice<T>) -> DevPtr {
    s.device_ptr(s.stream()).0
}

/// A Q8 split matrix's addresses, and its tensors (shared with the prepared weights), held so
/// the addresses stay valid.
struct Q8Mat {
    _tensors: Vec<Tensor>,
    p: Q8Ptrs,
}

/// Planar MXFP4 experts' addresses, and their tensors (shared with the prepared weights).
struct MxExp {
    _tensors: [Tensor; 2],
    p: MxPtrs,
}

struct FastLayer {
    attn_norm: DevPtr,
    qkv: Q8Mat,
    qkv_b: DevPtr,
    o: Q8Mat,
    o_b: DevPtr,
    sinks: DevPtr,
    ffn_norm: DevPtr,
    router_w: DevPtr,
    router_b: DevPtr,
    gate: MxExp,
    gate_b: DevPtr,
    up: MxExp,
    up_b: DevPtr,
    down: MxExp,
    down_b: DevPtr,
    /// 0 on full-attention layers.
    window: usize,
    /// Index into `FastDecoder::rope`.
    rope: usize,
}

/// A quantized-vector buffer.
struct QBuf {
    hi: CudaSlice<u8>,
    lo: CudaSlice<u8>,
    d: CudaSlice<f32>,
}

impl QBuf {
    fn new(dev: &candle_core::CudaDevice, k: usize) -> CResult<Self> {
        Ok(Self {
            hi: dev.alloc_zeros::<u8>(k)?,
            lo: dev.alloc_zeros::<u8>(k)?,
            d: dev.alloc_zeros::<f32>(k / 32)?,
        })
    }
    fn ptrs(&self) -> QVec {
        QVec {
            hi: sptr(&self.hi),
            lo: sptr(&self.lo),
            d: sptr(&self.d),
        }
    }
}

/// A captured step graph (CUDA graphs must not be used from two threads at once; the model
/// keeps its decoder behind a mutex).
struct Captured {
    key: Vec<u64>,
    graph: CudaGraph,
}
// SAFETY: the graph is only launched or dropped while the owning decoder is borrowed mutably
// (behind the model's mutex), so its use is serialized as the CUDA driver requires.
unsafe impl Send for Captured {}

/// The fused decode step of one model on one CUDA device.
pub(crate) struct FastDecoder {
    k: DecodeKernels,
    cfg: GptOssConfig,
    layers: Vec<FastLayer>,
    out_norm: DevPtr,
    output: Q8Mat,
    /// `inv_freq (hd/2)` f32 and `mscale`, full layers then sliding ones.
    rope: Vec<(Tensor, DevPtr, f32)>,
    _keep: Vec<Tensor>,
    h: CudaSlice<f32>,
    params: CudaSlice<i32>,
    xn: CudaSlice<f32>,
    xq: QBuf,
    xqp: QBuf,
    q: CudaSlice<f32>,
    part_m: CudaSlice<f32>,
    part_l: CudaSlice<f32>,
    part_acc: CudaSlice<f32>,
    oq: QBuf,
    router_logits: CudaSlice<f32>,
    /// The router's finished-blocks counter (kept at 0 between launches).
    router_count: CudaSlice<u32>,
    ids: CudaSlice<u32>,
    wts: CudaSlice<f32>,
    act: CudaSlice<f32>,
    actq: QBuf,
    logits: Tensor,
    use_graph: bool,
    /// The MLP's RMSNorm and the router as one kernel per layer (`dec_rmsnorm_router`) instead
    /// of two. Opt-in (`GPTOSS_FUSED_ROUTER=1`): written in session 13, not yet run on a GPU
    /// (`scripts/device/moe_mma_check.sh` checks and times it).
    fused_router: bool,
    graph: Option<Captured>,
    /// The block tables of the sequence being decoded, i32, full group then sliding group
    /// (each as long as the larger group), uploaded before each step.
    tables: Option<CudaSlice<i32>>,
    /// What each half of `tables` holds: (pool, sequence, first block, blocks, half length).
    uploaded: [Option<(u64, crate::kv::SeqId, usize, usize, usize)>; 2],
    /// Steps run so far. The first runs eagerly: with CUDA's lazy module loading a kernel's code
    /// is loaded at its first launch, which must not happen during a capture.
    steps: u64,
}

fn q8_mat(l: &Linear, what: &str) -> CResult<Q8Mat> {
    match l {
        Linear::Q8Split { qs, lo, d, .. } => Ok(Q8Mat {
            p: Q8Ptrs {
                qs: dptr(qs)?,
                lo: lo.as_ref().map(dptr).transpose()?.unwrap_or(0),
                d: dptr(d)?,
            },
            _tensors: [Some(qs), lo.as_ref(), Some(d)]
                .into_iter()
                .flatten()
                .cloned()
                .collect(),
        }),
        _ => Err(err(format!("{what} is not in the Q8 split form"))),
    }
}

fn bias_of(l: &Linear) -> Option<&Tensor> {
    match l {
        Linear::Q8Split { b, .. } => Some(b),
        _ => None,
    }
}

fn mx_exp(p: &Planar) -> CResult<MxExp> {
    Ok(MxExp {
        p: MxPtrs {
            qs: dptr(&p.qs)?,
            e8: dptr(&p.e8)?,
        },
        _tensors: [p.qs.clone(), p.e8.clone()],
    })
}

impl FastDecoder {
    /// Builds the decoder over the fast form of `prepared` on `device` (the pointers it keeps
    /// stay valid: the decoder holds a reference to every tensor it reads, and prepared weights
    /// never change), or says why it does not apply.
    pub(crate) fn new(
        prepared: &Prepared,
        cfg: &GptOssConfig,
        device: &Device,
        rope_full: &Rope,
        rope_swa: &Rope,
        use_graph: bool,
    ) -> CResult<Self> {
        let Device::Cuda(dev) = device else {
            return Err(err("not a CUDA device".into()));
        };
        let cfg = cfg.clone();
        let (d, hq, hd) = (cfg.n_embd, cfg.n_head, cfg.head_dim);
        let k = DecodeKernels::new(dev)?;
        let mut keep = Vec::new();
        let mut ptr_of = |t: &Tensor| -> CResult<DevPtr> {
            let t = t.contiguous()?;
            let p = dptr(&t)?;
            keep.push(t);
            Ok(p)
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for (il, l) in prepared.layers.iter().enumerate() {
            let Qkv::Fused(qkv) = &l.qkv else {
                return Err(err("QKV is not one stacked Q8 split matrix".into()));
            };
            let (Some(qkv_b), Some(o_b)) = (bias_of(qkv), bias_of(&l.attn_out)) else {
                return Err(err("dense matrices are not in the Q8 split form".into()));
            };
            let ExpertsForm::Planar { gate, up, down, .. } = &l.moe.experts else {
                let why = if l.moe.on_host {
                    "its MoE block runs on the host (--cpu-moe)"
                } else {
                    "its experts are not planar MXFP4"
                };
                return Err(err(format!("layer {il}: {why}")));
            };
            let sliding = cfg.is_sliding(il);
            layers.push(FastLayer {
                attn_norm: ptr_of(&l.attn_norm)?,
                qkv: q8_mat(qkv, "attn_qkv")?,
                qkv_b: ptr_of(qkv_b)?,
                o: q8_mat(&l.attn_out, "attn_output")?,
                o_b: ptr_of(o_b)?,
                sinks: ptr_of(&l.sinks)?,
                ffn_norm: ptr_of(&l.post_norm)?,
                router_w: ptr_of(&l.moe.router_w)?,
                router_b: ptr_of(&l.moe.router_b)?,
                gate: mx_exp(gate)?,
                gate_b: ptr_of(&l.moe.gate_b)?,
                up: mx_exp(up)?,
                up_b: ptr_of(&l.moe.up_b)?,
                down: mx_exp(down)?,
                down_b: ptr_of(&l.moe.down_b)?,
                window: if sliding { cfg.sliding_window } else { 0 },
                rope: sliding as usize,
            });
        }
        let out_norm = ptr_of(&prepared.output_norm)?;
        let output = q8_mat(&prepared.output, "output")?;
        let mut rope = Vec::new();
        for r in [rope_full, rope_swa] {
            let f: Vec<f32> = r.inv_freq.iter().map(|&x| x as f32).collect();
            let t = Tensor::from_vec(f, hd / 2, device)?;
            let p = dptr(&t)?;
            rope.push((t, p, r.mscale as f32));
        }
        let vocab = prepared.embd.vocab();
        let (topk, nff) = (cfg.n_expert_used, cfg.n_ff_exp);
        let s = Self {
            h: dev.alloc_zeros::<f32>(d)?,
            params: dev.alloc_zeros::<i32>(1 + 3 * cfg.n_layer)?,
            xn: dev.alloc_zeros::<f32>(d)?,
            xq: QBuf::new(dev, d)?,
            xqp: QBuf::new(dev, d)?,
            q: dev.alloc_zeros::<f32>(hq * hd)?,
            part_m: dev.alloc_zeros::<f32>(hq * MAX_SPLIT)?,
            part_l: dev.alloc_zeros::<f32>(hq * MAX_SPLIT)?,
            part_acc: dev.alloc_zeros::<f32>(hq * MAX_SPLIT * hd)?,
            oq: QBuf::new(dev, hq * hd)?,
            router_logits: dev.alloc_zeros::<f32>(cfg.n_expert)?,
            router_count: dev.alloc_zeros::<u32>(1)?,
            ids: dev.alloc_zeros::<u32>(topk)?,
            wts: dev.alloc_zeros::<f32>(topk)?,
            act: dev.alloc_zeros::<f32>(topk * nff)?,
            actq: QBuf::new(dev, topk * nff)?,
            logits: Tensor::zeros((1, vocab), DType::F32, device)?,
            k,
            cfg,
            layers,
            out_norm,
            output,
            rope,
            _keep: keep,
            use_graph,
            fused_router: std::env::var("GPTOSS_FUSED_ROUTER").is_ok_and(|v| v == "1"),
            graph: None,
            tables: None,
            uploaded: [None, None],
            steps: 0,
        };
        device.synchronize()?;
        Ok(s)
    }

    /// Splits of the keys of a layer whose query sees up to `rows` rows: bucketed by powers of
    /// two, so the captured graph changes only when a sequence doubles.
    fn nsplit(&self, window: usize, rows: usize) -> usize {
        // Full layers split at least 512 keys' worth, so that short sequences still spread
        // their heads over several blocks.
        let keys = if window > 0 {
            window.min(rows)
        } else {
            rows.max(MIN_FULL_KEYS)
        };
        keys.next_power_of_two()
            .div_ceil(KEYS_PER_SPLIT)
            .clamp(1, MAX_SPLIT)
    }

    /// Enqueues the whole step for the KV buffers `kv[il] = (k, v, nsplit)`.
    fn enqueue(&self, kv: &[KvLayer]) -> CResult<()> {
        let c = &self.cfg;
        let k = &self.k;
        let (d, hq, hkv, hd) = (c.n_embd, c.n_head, c.n_head_kv, c.head_dim);
        let (topk, nff, eps) = (c.n_expert_used, c.n_ff_exp, c.rms_eps);
        let h = sptr(&self.h);
        let params = sptr(&self.params);
        let (xq, xqp, oq, actq) = (
            self.xq.ptrs(),
            self.xqp.ptrs(),
            self.oq.ptrs(),
            self.actq.ptrs(),
        );
        let q = sptr(&self.q);
        let parts = (sptr(&self.part_m), sptr(&self.part_l), sptr(&self.part_acc));
        let route = (sptr(&self.ids), sptr(&self.wts));
        let rl = sptr(&self.router_logits);
        let count = sptr(&self.router_count);
        let act = sptr(&self.act);
        let xn = sptr(&self.xn);
        let scale = 1.0 / (hd as f32).sqrt();
        for (il, (l, kvl)) in self.layers.iter().zip(kv).enumerate() {
            let nsplit = kvl.nsplit;
            let (_, inv_freq, mscale) = &self.rope[l.rope];
            k.rmsnorm_quant(h, l.attn_norm, eps, d, 0, xq, false)?;
            k.qkv_rope(
                l.qkv.p,
                l.qkv_b,
                xq,
                d,
                (hq, hkv, hd),
                *inv_freq,
                *mscale,
                params,
                il,
                q,
                kvl.kv,
            )?;
            k.attn_split(
                q,
                kvl.kv,
                (kvl.table, kvl.bs),
                params,
                AttnRows::fused(il),
                (hq, hkv, hd),
                l.window,
                scale,
                nsplit,
                parts,
            )?;
            k.attn_combine(parts, l.sinks, (hq, hd), nsplit, 1, CombineOut::Quant(oq))?;
            k.q8_gemv(l.o.p, l.o_b, oq, h, d, hq * hd, true)?;
            let router = (l.router_w, l.router_b);
            if self.fused_router {
                let q = (0, xqp);
                k.rmsnorm_router(
                    (h, l.ffn_norm, eps),
                    router,
                    (c.n_expert, d, topk),
                    q,
                    rl,
                    route,
                    count,
                )?;
            } else {
                k.rmsnorm_quant(h, l.ffn_norm, eps, d, xn, xqp, true)?;
                k.router(xn, router, (c.n_expert, d, topk), rl, route, count)?;
            }
            k.moe_gate_up(
                (l.gate.p, l.gate_b),
                (l.up.p, l.up_b),
                xqp,
                route.0,
                (topk, nff, d),
                (SWIGLU_ALPHA, SWIGLU_LIMIT),
                act,
            )?;
            k.quant(act, topk * nff / 32, actq, true)?;
            k.moe_down((l.down.p, l.down_b), actq, route, (topk, d, nff), h)?;
        }
        k.rmsnorm_quant(h, self.out_norm, eps, d, 0, xq, false)?;
        let vocab = self.logits.dim(1)?;
        k.q8_gemv(self.output.p, 0, xq, dptr(&self.logits)?, vocab, d, false)
    }

    /// Runs `token` of `chunk` (one token at position `chunk.pos`, its KV row reserved in
    /// `pool`), writing its keys and values into the pool's blocks; returns f32 logits
    /// `(1, vocab)`. The pool counts the row when the caller commits the step.
    pub(crate) fn step(
        &mut self,
        prepared: &Prepared,
        token: u32,
        chunk: &ChunkKv,
        pool: &KvPool,
    ) -> CResult<Tensor> {
        let _span = tracing::trace_span!("fast_decode", pos = chunk.pos).entered();
        let c = &self.cfg;
        let emb = prepared
            .embd
            .lookup_host(&[token])
            .map_err(|e| err(e.to_string()))?;
        let bs = pool.block_size();
        let pos = chunk.pos;
        let mut params: Vec<i32> = Vec::with_capacity(1 + 3 * c.n_layer);
        let as_i32 = |v: usize| i32::try_from(v).map_err(|_| err(format!("{v} > i32")));
        params.push(as_i32(pos)?);
        // The sequence's block tables, full group then sliding group (`first`, blocks).
        let mut tables: [Option<(usize, Vec<u32>)>; 2] = [None, None];
        for il in 0..c.n_layer {
            let g = usize::from(pool.is_sliding_layer(il));
            if tables[g].is_none() {
                tables[g] = Some(pool.table(chunk.seq, il).map_err(|e| err(e.to_string()))?);
            }
        }
        let cap = pool.capacity_blocks().into_iter().max().unwrap_or(0).max(1);
        if self.tables.as_ref().is_none_or(|t| t.len() < 2 * cap) {
            let dev = match self.logits.device() {
                Device::Cuda(d) => d.clone(),
                _ => return Err(err("logits not on a CUDA device".into())),
            };
            self.tables = Some(dev.alloc_zeros::<i32>(2 * cap)?);
            self.uploaded = [None, None];
        }
        let table_base = match &self.tables {
            Some(t) => sptr(t),
            None => return Err(err("no block table buffer".into())),
        };
        let mut kv = Vec::with_capacity(c.n_layer);
        for (il, l) in self.layers.iter().enumerate() {
            let g = usize::from(pool.is_sliding_layer(il));
            let Some((first, blocks)) = &tables[g] else {
                return Err(err("no block table".into()));
            };
            let kv_off = first * bs;
            let rel = pos
                .checked_sub(kv_off)
                .ok_or_else(|| err(format!("position {pos} before the held blocks")))?;
            let block = blocks
                .get(rel / bs)
                .ok_or_else(|| err(format!("position {pos} has no block")))?;
            let row = *block as usize * bs + rel % bs;
            params.extend([as_i32(row)?, as_i32(rel + 1)?, as_i32(kv_off)?]);
            let (kb, vb) = pool.layer_buffers(il);
            let table = table_base + (g * cap * std::mem::size_of::<i32>()) as u64;
            kv.push(KvLayer {
                kv: KvPtrs::of(kb, vb)?,
                table,
                bs,
                nsplit: self.nsplit(l.window, rel + 1),
            });
        }
        let stream = self.k.stream().clone();
        stream
            .memcpy_htod(&emb, &mut self.h)
            .map_err(|e| err(e.to_string()))?;
        stream
            .memcpy_htod(&params, &mut self.params)
            .map_err(|e| err(e.to_string()))?;
        // Each group's table into its half of the buffer, when it changed since the last step
        // (a sequence's table only grows at the end or drops blocks at the front).
        if let Some(buf) = self.tables.as_mut() {
            for (g, t) in tables.iter().enumerate() {
                if let Some((first, blocks)) = t {
                    let n = blocks.len().min(cap);
                    let key = (pool.uid(), chunk.seq, *first, n, cap);
                    if n > 0 && self.uploaded[g] != Some(key) {
                        let host: Vec<i32> = blocks[..n].iter().map(|&b| b as i32).collect();
                        stream
                            .memcpy_htod(&host, &mut buf.slice_mut(g * cap..g * cap + n))
                            .map_err(|e| err(e.to_string()))?;
                        self.uploaded[g] = Some(key);
                    }
                }
            }
        }
        let key: Vec<u64> = kv
            .iter()
            .flat_map(|l| [l.kv.k, l.kv.v, l.kv.half as u64, l.table, l.nsplit as u64])
            .collect();
        if !self.use_graph || self.steps == 0 {
            self.enqueue(&kv)?;
        } else {
            if self.graph.as_ref().is_none_or(|g| g.key != key) {
                self.graph = None;
                stream
                    .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                    .map_err(|e| err(format!("begin capture: {e}")))?;
                let r = self.enqueue(&kv);
                let g = stream
                    .end_capture(sys::CUgraphInstantiate_flags(0))
                    .map_err(|e| err(format!("end capture: {e}")));
                r?;
                let graph = g?.ok_or_else(|| err("empty graph".into()))?;
                tracing::debug!(pos, "captured the decode graph");
                self.graph = Some(Captured { key, graph });
            }
            if let Some(g) = &self.graph {
                g.graph
                    .launch()
                    .map_err(|e| err(format!("graph launch: {e}")))?;
            }
        }
        self.steps += 1;
        self.logits.copy()
    }
}

/// One layer's KV for a step: the pool's buffers, the block table and the key splits.
struct KvLayer {
    kv: KvPtrs,
    table: DevPtr,
    bs: usize,
    nsplit: usize,
}
