//! Launchers of `kernels/decode.cu`, the fused kernels of the batch-1 decode step.
//!
//! Unlike the `CustomOp` launchers, these take raw device addresses ([`DevPtr`]) of buffers the
//! caller owns and allocate nothing, so that a whole decode step can be replayed as a CUDA
//! graph. Each method documents the shapes its pointers must have; the caller (the engine's
//! fast decoder) checks them once when it builds its buffers. The layouts (Q8 split, MXFP4
//! planar, quantized vectors) are described at the top of `decode.cu`.

use std::ffi::c_void;
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::{DType, Result, Storage, Tensor};

use super::ptx;
use crate::attention::paged::kv_half;

pub(crate) const MODULE: &str = "gpt_kernels::decode";

/// A device address (`CUdeviceptr`); 0 is a null pointer where a kernel accepts one.
pub type DevPtr = u64;

/// Device address of the first element of a contiguous CUDA tensor (U8, U32, F32, F16 or BF16). The
/// address stays valid while the tensor's storage lives.
pub fn tensor_ptr(t: &Tensor) -> Result<DevPtr> {
    let (st, l) = t.storage_and_layout();
    let Storage::Cuda(cs) = &*st else {
        candle_core::bail!("decode: tensor is not on a CUDA device");
    };
    storage_ptr(cs, l)
}

/// Device address of the first element of `layout` in `cs` (contiguous; U8, U32, F32, F16 or BF16):
/// what a `CustomOp`'s `cuda_fwd` hands a raw-pointer launcher.
pub fn storage_ptr(cs: &candle_core::CudaStorage, l: &candle_core::Layout) -> Result<DevPtr> {
    use candle_core::backend::BackendStorage;
    if !l.is_contiguous() {
        candle_core::bail!("decode: tensor {:?} is not contiguous", l.shape());
    }
    let off = (l.start_offset() * cs.dtype().size_in_bytes()) as u64;
    let stream = cs.device.cuda_stream();
    let base = match cs.dtype() {
        DType::U8 => cs.as_cuda_slice::<u8>()?.device_ptr(&stream).0,
        DType::U32 => cs.as_cuda_slice::<u32>()?.device_ptr(&stream).0,
        DType::F32 => cs.as_cuda_slice::<f32>()?.device_ptr(&stream).0,
        DType::F16 => cs.as_cuda_slice::<half::f16>()?.device_ptr(&stream).0,
        DType::BF16 => cs.as_cuda_slice::<half::bf16>()?.device_ptr(&stream).0,
        other => candle_core::bail!("decode: unexpected dtype {other:?}"),
    };
    Ok(base + off)
}

/// Warps per block of the GEMV kernels (`DEC_WARPS`).
pub const DEC_WARPS: u32 = 8;
/// Longest vector the norm kernel holds (`DEC_MAX_D`).
pub const DEC_MAX_D: usize = 8192;
/// The largest head dim the decode attention supports (`DEC_ATT_D`; 32 or 64).
pub const DEC_ATT_D: usize = 64;
/// Most query heads per KV head (`DEC_ATT_MAX_G`).
pub const DEC_ATT_MAX_G: usize = 32;
/// Most splits of one head's keys (`DEC_MAX_SPLIT`).
pub const DEC_MAX_SPLIT: usize = 256;

/// A vector quantized for the decode GEMVs: `hi`, `lo` int8 `(k)`, `d` f32 `(k/32)`.
#[derive(Clone, Copy, Debug)]
pub struct QVec {
    /// High int8 plane.
    pub hi: DevPtr,
    /// Low int8 plane.
    pub lo: DevPtr,
    /// Per-32 scales.
    pub d: DevPtr,
}

/// A Q8 split matrix `(n, k)`: `qs` int8 `(n, k)`, `d` f32 `(n, k/32)`; a two-plane one also
/// `lo` int8 `(n, k)`, each weight `d * (128 * qs + lo)` (15-bit block integers).
#[derive(Clone, Copy, Debug)]
pub struct Q8Ptrs {
    /// Int8 weights (the high plane of a two-plane matrix).
    pub qs: DevPtr,
    /// The low plane of a two-plane matrix; 0 for one plane.
    pub lo: DevPtr,
    /// Per-32 scales.
    pub d: DevPtr,
}

/// Planar MXFP4 experts `(e, n, k)`: `qs` u8 `(e, n, k/2)`, `e8` u8 `(e, n, k/32)`.
#[derive(Clone, Copy, Debug)]
pub struct MxPtrs {
    /// Nibble bytes.
    pub qs: DevPtr,
    /// Exponent bytes.
    pub e8: DevPtr,
}

/// A KV cache's key and value buffers `(rows, hkv, hd)`, both f32 or both f16: the kernels
/// that read or write them come in one instance per element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvPtrs {
    /// Keys.
    pub k: DevPtr,
    /// Values.
    pub v: DevPtr,
    /// f16 elements (else f32).
    pub half: bool,
}

impl KvPtrs {
    /// The buffers of `k` and `v` (contiguous, one dtype: F32 or F16).
    pub fn of(k: &Tensor, v: &Tensor) -> Result<Self> {
        Ok(Self {
            k: tensor_ptr(k)?,
            v: tensor_ptr(v)?,
            half: kv_half(k.dtype(), v.dtype())?,
        })
    }

    /// [`Self::of`] for the storages a `CustomOp`'s `cuda_fwd` receives.
    pub fn of_storage(
        (k, kl): (&candle_core::CudaStorage, &candle_core::Layout),
        (v, vl): (&candle_core::CudaStorage, &candle_core::Layout),
    ) -> Result<Self> {
        use candle_core::backend::BackendStorage;
        Ok(Self {
            k: storage_ptr(k, kl)?,
            v: storage_ptr(v, vl)?,
            half: kv_half(k.dtype(), v.dtype())?,
        })
    }

    /// `base` for f32 caches, `half` for f16 ones.
    pub(crate) fn kernel(&self, base: &'static str, half: &'static str) -> &'static str {
        if self.half {
            half
        } else {
            base
        }
    }
}

/// Where the query rows of one split-attention launch find their inputs: row `r`'s position
/// is `params[r * p_stride]`, the absolute position of its first key row
/// `params[r * p_stride + off_at]`, and its block table starts `r * table_stride` entries into
/// the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnRows {
    /// Query rows.
    pub rows: usize,
    /// i32 parameters per row.
    pub p_stride: usize,
    /// Index of the key offset within a row's parameters.
    pub off_at: usize,
    /// Table entries per row.
    pub table_stride: usize,
}

impl AttnRows {
    /// The fused decode step's one row at layer `layer`: the position at `params[0]`, each
    /// layer's `(cache row, rows, key offset)` at `params[1 + 3 layer..]`.
    pub fn fused(layer: usize) -> Self {
        Self {
            rows: 1,
            p_stride: 0,
            off_at: 3 + 3 * layer,
            table_stride: 0,
        }
    }
}

/// Where [`DecodeKernels::attn_combine`] writes.
#[derive(Clone, Copy, Debug)]
pub enum CombineOut {
    /// Row 0 quantized for the output projection's GEMV.
    Quant(QVec),
    /// f32 `(rows, hq * hd)`.
    F32(DevPtr),
}

#[derive(Clone, Copy)]
enum Arg {
    P(u64),
    U(u32),
    F(f32),
}

impl Arg {
    /// Where the launch reads the parameter's value from.
    fn addr(&self) -> *mut c_void {
        match self {
            Arg::P(v) => v as *const u64 as *mut c_void,
            Arg::U(v) => v as *const u32 as *mut c_void,
            Arg::F(v) => v as *const f32 as *mut c_void,
        }
    }
}

/// The decode kernels, loaded once on a device.
pub struct DecodeKernels {
    stream: Arc<CudaStream>,
    funcs: Vec<(&'static str, CudaFunction)>,
    /// Launch with programmatic stream serialization (`kernels/pdl.cuh`): the module was built
    /// for compute capability 9.0 or later and `GPTOSS_PDL=1` asks for it.
    pdl: bool,
}

/// Whether kernels built for `target` (compute capability × 10) are launched with programmatic
/// dependent launch: Hopper's `griddepcontrol` exists from 9.0. Opt-in (`GPTOSS_PDL=1`): on an
/// H100 it was correct and no faster (decode 0.99x–1.00x, `scripts/device/pdl_check.sh`,
/// session 13), so the default launch stays the plain one.
fn pdl_enabled(target: Option<u32>) -> bool {
    let on = std::env::var("GPTOSS_PDL").is_ok_and(|v| v == "1");
    target.is_some_and(|t| t >= 90) && on
}

const NAMES: [&str; 15] = [
    "dec_rmsnorm_quant",
    "dec_quant",
    "dec_q8_gemv",
    "dec_qkv_rope",
    "dec_qkv_rope_h",
    "dec_attn_split",
    "dec_attn_split_h",
    "dec_attn_combine",
    "dec_router",
    "dec_rmsnorm_router",
    "dec_moe_gate_up",
    "dec_moe_down",
    "dec_q8_0_split",
    "dec_mxfp4_planar",
    "dec_mxfp4_unplanar",
];

/// The leading parameters of the norm kernels (`dec_rmsnorm_quant`, `dec_rmsnorm_router`):
/// `x, w, eps, k, xn, q`.
fn norm_args(
    (x, w, eps): (DevPtr, DevPtr, f32),
    k: usize,
    xn: DevPtr,
    q: QVec,
) -> Result<[Arg; 8]> {
    use Arg::*;
    let k = U(u32_of("k", k)?);
    Ok([P(x), P(w), F(eps), k, P(xn), P(q.hi), P(q.lo), P(q.d)])
}

/// The trailing parameters of the router kernels (`dec_router`, `dec_rmsnorm_router`):
/// `logits, topk, ids, wts, counter`, once `e <= 256` and `1 <= topk <= min(32, e)` hold.
fn route_args(
    (e, topk): (usize, usize),
    logits: DevPtr,
    (ids, wts): (DevPtr, DevPtr),
    counter: DevPtr,
) -> Result<[Arg; 5]> {
    use Arg::*;
    if e == 0 || e > 256 || topk == 0 || topk > 32 || topk > e {
        candle_core::bail!("decode: top-{topk} of {e} experts");
    }
    Ok([
        P(logits),
        U(u32_of("topk", topk)?),
        P(ids),
        P(wts),
        P(counter),
    ])
}

fn cfg(grid: (u32, u32), block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0.max(1), grid.1.max(1), 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The launch of `dec_quant` over `nblocks` 32-blocks: one warp per block, 8 per thread block.
pub(crate) fn quant_config(nblocks: u32) -> LaunchConfig {
    cfg((nblocks.div_ceil(8), 1), 256)
}

fn u32_of(what: &str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| candle_core::Error::msg(format!("decode: {what} = {n} > u32")))
}

impl DecodeKernels {
    /// Loads the module on `dev`.
    pub fn new(dev: &CudaDevice) -> Result<Self> {
        Self::with(dev, &NAMES)
    }

    /// Loads only the split attention and its combine (the batched decode's paged attention).
    pub fn attention(dev: &CudaDevice) -> Result<Self> {
        Self::with(
            dev,
            &["dec_attn_split", "dec_attn_split_h", "dec_attn_combine"],
        )
    }

    fn with(dev: &CudaDevice, names: &[&'static str]) -> Result<Self> {
        let mut funcs = Vec::new();
        for &name in names {
            let f =
                dev.get_or_load_custom_func(name, MODULE, ptx::for_device(dev, ptx::DECODE)?)?;
            funcs.push((name, f.into_cuda_function()));
        }
        Ok(Self {
            stream: dev.cuda_stream(),
            funcs,
            pdl: pdl_enabled(ptx::target_for(dev, ptx::DECODE)?),
        })
    }

    /// The stream every kernel is launched on (the device's).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn go(&self, name: &str, c: LaunchConfig, args: &[Arg]) -> Result<()> {
        let f = self
            .funcs
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f)
            .ok_or_else(|| candle_core::Error::msg(format!("decode: no kernel {name}")))?;
        if self.pdl {
            return self.go_pdl(f, c, args);
        }
        let mut b = self.stream.launch_builder(f);
        for a in args {
            match a {
                Arg::P(v) => b.arg(v),
                Arg::U(v) => b.arg(v),
                Arg::F(v) => b.arg(v),
            };
        }
        // SAFETY: every launcher below passes the kernel's parameters in order and with its
        // types; the caller guarantees the pointers hold the documented shapes.
        unsafe { b.launch(c) }.w()?;
        Ok(())
    }

    /// [`Self::go`] through `cuLaunchKernelEx` with the programmatic stream-serialization
    /// attribute: the kernel may start before the previous one in the stream completes and
    /// waits for it in `pdl_wait()` (every kernel of `decode.cu` does, before it touches data an
    /// earlier kernel wrote or reads).
    fn go_pdl(&self, f: &CudaFunction, c: LaunchConfig, args: &[Arg]) -> Result<()> {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let mut params: Vec<*mut c_void> = args.iter().map(Arg::addr).collect();
        // SAFETY: a zeroed attribute is a valid C struct; its id and value are set next.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: c.grid_dim.0,
            gridDimY: c.grid_dim.1,
            gridDimZ: c.grid_dim.2,
            blockDimX: c.block_dim.0,
            blockDimY: c.block_dim.1,
            blockDimZ: c.block_dim.2,
            sharedMemBytes: c.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        self.stream.context().bind_to_thread().w()?;
        // SAFETY: `params` points at `args`' values, which outlive the call (the driver copies
        // them at launch); every launcher passes the kernel's parameters in order and with its
        // types, and the caller guarantees the pointers hold the documented shapes.
        unsafe {
            sys::cuLaunchKernelEx(
                &config,
                f.cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
        .w()?;
        Ok(())
    }

    /// `xn = rms_norm(x) * w` (f32 `(k)`, written if `xn != 0`) and its quantization into `q`
    /// (permuted for MXFP4 weights if `perm`). `k <= DEC_MAX_D`, `k % 32 == 0`.
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_quant(
        &self,
        x: DevPtr,
        w: DevPtr,
        eps: f32,
        k: usize,
        xn: DevPtr,
        q: QVec,
        perm: bool,
    ) -> Result<()> {
        let mut args = norm_args((x, w, eps), k, xn, q)?.to_vec();
        args.push(Arg::U(perm as u32));
        self.go("dec_rmsnorm_quant", cfg((1, 1), 1024), &args)
    }

    /// Quantizes f32 `x (nblocks * 32)` into `q`.
    pub fn quant(&self, x: DevPtr, nblocks: usize, q: QVec, perm: bool) -> Result<()> {
        use Arg::*;
        let nb = u32_of("blocks", nblocks)?;
        let args = [P(x), U(nb), P(q.hi), P(q.lo), P(q.d), U(perm as u32)];
        self.go("dec_quant", quant_config(nb), &args)
    }

    /// `y (n) (+)= W (n, k) · x + bias` with `x` quantized (natural order); `bias` may be 0.
    #[allow(clippy::too_many_arguments)]
    pub fn q8_gemv(
        &self,
        w: Q8Ptrs,
        bias: DevPtr,
        x: QVec,
        y: DevPtr,
        n: usize,
        k: usize,
        accumulate: bool,
    ) -> Result<()> {
        use Arg::*;
        let nn = u32_of("n", n)?;
        let args = [
            P(w.qs),
            P(w.lo),
            P(w.d),
            P(bias),
            P(x.hi),
            P(x.lo),
            P(x.d),
            P(y),
            U(nn),
            U(u32_of("k", k)?),
            U(accumulate as u32),
        ];
        self.go(
            "dec_q8_gemv",
            cfg((nn.div_ceil(DEC_WARPS), 1), 32 * DEC_WARPS),
            &args,
        )
    }

    /// Fused QKV `(hq + 2 hkv) * hd` rows of `w`, bias, RoPE (`inv_freq (hd/2)` f32, `mscale`)
    /// at position `params[0]`; q to `q_out (hq * hd)`, k and v to row `params[1 + 3 layer]`
    /// of the caches `kv` `(cap, hkv, hd)`.
    #[allow(clippy::too_many_arguments)]
    pub fn qkv_rope(
        &self,
        w: Q8Ptrs,
        bias: DevPtr,
        x: QVec,
        k: usize,
        (hq, hkv, hd): (usize, usize, usize),
        inv_freq: DevPtr,
        mscale: f32,
        params: DevPtr,
        layer: usize,
        q_out: DevPtr,
        kv: KvPtrs,
    ) -> Result<()> {
        use Arg::*;
        let pairs = u32_of("qkv pairs", (hq + 2 * hkv) * hd / 2)?;
        let args = [
            P(w.qs),
            P(w.lo),
            P(w.d),
            P(bias),
            P(x.hi),
            P(x.lo),
            P(x.d),
            U(u32_of("k", k)?),
            U(u32_of("hq", hq)?),
            U(u32_of("hkv", hkv)?),
            U(u32_of("hd", hd)?),
            P(inv_freq),
            F(mscale),
            P(params),
            U(u32_of("layer", layer)?),
            P(q_out),
            P(kv.k),
            P(kv.v),
        ];
        self.go(
            kv.kernel("dec_qkv_rope", "dec_qkv_rope_h"),
            cfg((pairs.div_ceil(DEC_WARPS), 1), 32 * DEC_WARPS),
            &args,
        )
    }

    /// Split attention partials: grid `(hkv, nsplit, rows.rows)`, `hq / hkv` warps per block.
    /// Partials `m`, `l` f32 `(rows, hq, nsplit)`, `acc` f32 `(rows, hq, nsplit, hd)`; `hd` is
    /// 32 or 64; `q` f32 `(rows, hq, hd)`; `kv` f32 or f16. With a block table (`table` i32,
    /// non-zero) cache row `j` is row `table[j / bs] * bs + j % bs` of the buffers (the paged
    /// pool); with `table` 0, row `j`. See [`AttnRows`] for where each query row finds its position and table.
    #[allow(clippy::too_many_arguments)]
    pub fn attn_split(
        &self,
        q: DevPtr,
        kv: KvPtrs,
        (table, bs): (DevPtr, usize),
        params: DevPtr,
        rows: AttnRows,
        (hq, hkv, hd): (usize, usize, usize),
        window: usize,
        scale: f32,
        nsplit: usize,
        (pm, pl, pacc): (DevPtr, DevPtr, DevPtr),
    ) -> Result<()> {
        use Arg::*;
        let g = hq / hkv.max(1);
        let args = [
            P(q),
            P(kv.k),
            P(kv.v),
            P(table),
            U(u32_of("block size", bs.max(1))?),
            U(u32_of("table stride", rows.table_stride)?),
            P(params),
            U(u32_of("params stride", rows.p_stride)?),
            U(u32_of("offset index", rows.off_at)?),
            U(u32_of("hkv", hkv)?),
            U(u32_of("hd", hd)?),
            U(u32_of("window", window)?),
            F(scale),
            P(pm),
            P(pl),
            P(pacc),
        ];
        let mut c = cfg(
            (u32_of("hkv", hkv)?, u32_of("nsplit", nsplit)?),
            32 * g as u32,
        );
        c.grid_dim.2 = u32_of("attention rows", rows.rows.max(1))?;
        self.go(kv.kernel("dec_attn_split", "dec_attn_split_h"), c, &args)
    }

    /// Combines the partials of `rows` query rows of `hq` heads with `sinks (hq)`: into
    /// [`CombineOut`]. `nsplit <= DEC_MAX_SPLIT`.
    pub fn attn_combine(
        &self,
        (pm, pl, pacc): (DevPtr, DevPtr, DevPtr),
        sinks: DevPtr,
        (hq, hd): (usize, usize),
        nsplit: usize,
        rows: usize,
        out: CombineOut,
    ) -> Result<()> {
        use Arg::*;
        if nsplit > DEC_MAX_SPLIT || hd == 0 || hd % 32 != 0 || hd > 256 {
            candle_core::bail!("decode: attn_combine with {nsplit} splits of head dim {hd}");
        }
        let (q, f) = match out {
            CombineOut::Quant(q) if rows == 1 => (q, 0),
            CombineOut::Quant(_) => {
                candle_core::bail!("decode: attn_combine quantizes one row, not {rows}")
            }
            CombineOut::F32(f) => (QVec { hi: 0, lo: 0, d: 0 }, f),
        };
        let args = [
            P(pm),
            P(pl),
            P(pacc),
            P(sinks),
            U(u32_of("nsplit", nsplit)?),
            U(u32_of("hd", hd)?),
            P(q.hi),
            P(q.lo),
            P(q.d),
            P(f),
        ];
        let block = (256 / hd * hd) as u32;
        self.go(
            "dec_attn_combine",
            cfg(
                (u32_of("hq", hq)?, u32_of("attention rows", rows.max(1))?),
                block,
            ),
            &args,
        )
    }

    /// Router: `logits (e)` = `w (e, k)` f32 · `x (k)` + bias `(e)`, then the top-`topk`
    /// experts (ties to the lower index) and the softmax of their logits into `ids`, `wts`
    /// `(topk)`. `counter` is a u32 that must be 0 before the first launch (the kernel leaves it
    /// 0). `e <= 256`, `topk <= 32`.
    #[allow(clippy::too_many_arguments)]
    pub fn router(
        &self,
        x: DevPtr,
        (w, b): (DevPtr, DevPtr),
        (e, k, topk): (usize, usize, usize),
        logits: DevPtr,
        (ids, wts): (DevPtr, DevPtr),
        counter: DevPtr,
    ) -> Result<()> {
        use Arg::*;
        let mut args = vec![P(x), P(w), P(b), U(u32_of("k", k)?)];
        args.extend(route_args((e, topk), logits, (ids, wts), counter)?);
        self.go("dec_router", cfg((u32_of("e", e)?, 1), 256), &args)
    }

    /// The MLP's RMSNorm and the router in one launch (one block per expert): `y = rms_norm(x)
    /// * norm_w` (f32 `(k)`, written to `xn` if `xn != 0`), quantized into `q` permuted for the
    /// MXFP4 experts; `logits (e)` = `w (e, k)` f32 · `y` + bias `(e)`; then the top-`topk`
    /// experts (ties to the lower index) and the softmax of their logits into `ids`, `wts`
    /// `(topk)`. `counter` is a u32 that must be 0 before the first launch (the kernel leaves it
    /// 0). `e <= 256`, `topk <= 32`, `k <= DEC_MAX_D`, `k % 32 == 0`.
    #[allow(clippy::too_many_arguments)]
    pub fn rmsnorm_router(
        &self,
        (x, norm_w, eps): (DevPtr, DevPtr, f32),
        (w, b): (DevPtr, DevPtr),
        (e, k, topk): (usize, usize, usize),
        (xn, q): (DevPtr, QVec),
        logits: DevPtr,
        (ids, wts): (DevPtr, DevPtr),
        counter: DevPtr,
    ) -> Result<()> {
        let mut args = norm_args((x, norm_w, eps), k, xn, q)?.to_vec();
        args.extend([Arg::P(w), Arg::P(b)]);
        args.extend(route_args((e, topk), logits, (ids, wts), counter)?);
        self.go("dec_rmsnorm_router", cfg((u32_of("e", e)?, 1), 256), &args)
    }

    /// The chosen gate/up experts `ids (topk)` (`n` rows each, `k` inputs), biases `(e, n)`,
    /// SwiGLU-OAI: `act (topk, n)`.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_gate_up(
        &self,
        (gate, gate_b): (MxPtrs, DevPtr),
        (up, up_b): (MxPtrs, DevPtr),
        x: QVec,
        ids: DevPtr,
        (topk, n, k): (usize, usize, usize),
        (alpha, limit): (f32, f32),
        act: DevPtr,
    ) -> Result<()> {
        use Arg::*;
        let nn = u32_of("n", n)?;
        let args = [
            P(gate.qs),
            P(gate.e8),
            P(gate_b),
            P(up.qs),
            P(up.e8),
            P(up_b),
            P(x.hi),
            P(x.lo),
            P(x.d),
            P(ids),
            U(nn),
            U(u32_of("k", k)?),
            F(alpha),
            F(limit),
            P(act),
        ];
        self.go(
            "dec_moe_gate_up",
            cfg(
                (nn.div_ceil(DEC_WARPS), u32_of("topk", topk)?),
                32 * DEC_WARPS,
            ),
            &args,
        )
    }

    /// Down experts (`n` rows, `k` inputs), bias `(e, n)`, routing weights, into `h (n) +=`.
    /// `x` holds `topk` quantized (permuted) rows of `k`.
    #[allow(clippy::too_many_arguments)]
    pub fn moe_down(
        &self,
        (down, down_b): (MxPtrs, DevPtr),
        x: QVec,
        (ids, wts): (DevPtr, DevPtr),
        (topk, n, k): (usize, usize, usize),
        h: DevPtr,
    ) -> Result<()> {
        use Arg::*;
        let nn = u32_of("n", n)?;
        let args = [
            P(down.qs),
            P(down.e8),
            P(down_b),
            P(x.hi),
            P(x.lo),
            P(x.d),
            P(ids),
            P(wts),
            U(u32_of("topk", topk)?),
            U(nn),
            U(u32_of("k", k)?),
            P(h),
        ];
        self.go(
            "dec_moe_down",
            cfg((nn.div_ceil(DEC_WARPS), 1), 32 * DEC_WARPS),
            &args,
        )
    }

    /// ggml Q8_0 blocks at `src` (`nblocks * 34` bytes) to split `qs`, `d` (`lo` unused).
    pub fn q8_0_split(&self, src: DevPtr, nblocks: usize, dst: Q8Ptrs) -> Result<()> {
        use Arg::*;
        let grid = u32_of("blocks", nblocks.div_ceil(256))?;
        let args = [P(src), P(nblocks as u64), P(dst.qs), P(dst.d)];
        self.go("dec_q8_0_split", cfg((grid, 1), 256), &args)
    }

    /// ggml MXFP4 blocks at `src` (`nblocks * 17` bytes) to planar `qs`, `e8`.
    pub fn mxfp4_planar(&self, src: DevPtr, nblocks: usize, dst: MxPtrs) -> Result<()> {
        use Arg::*;
        let grid = u32_of("blocks", nblocks.div_ceil(256))?;
        let args = [P(src), P(nblocks as u64), P(dst.qs), P(dst.e8)];
        self.go("dec_mxfp4_planar", cfg((grid, 1), 256), &args)
    }

    /// Planar MXFP4 `src` back to ggml blocks at `dst` (`nblocks * 17` bytes).
    pub fn mxfp4_unplanar(&self, src: MxPtrs, nblocks: usize, dst: DevPtr) -> Result<()> {
        use Arg::*;
        let grid = u32_of("blocks", nblocks.div_ceil(256))?;
        let args = [P(src.qs), P(src.e8), P(nblocks as u64), P(dst)];
        self.go("dec_mxfp4_unplanar", cfg((grid, 1), 256), &args)
    }
}

/// One expert's planar MXFP4 weights, `qs U8 (n, k/2)` and `e8 U8 (n, k/32)`, as ggml blocks
/// `U8 (n, k/32*17)` (what [`crate::mxfp4_dequant`] reads), on the same CUDA device.
pub fn planar_to_blocks(qs: &Tensor, e8: &Tensor) -> Result<Tensor> {
    let (n, half) = qs.dims2()?;
    let (n2, nb_row) = e8.dims2()?;
    if n != n2 || half != nb_row * 16 {
        candle_core::bail!(
            "planar_to_blocks: qs {:?} and e8 {:?} do not describe one matrix",
            qs.dims(),
            e8.dims()
        );
    }
    let candle_core::Device::Cuda(dev) = qs.device() else {
        candle_core::bail!("planar_to_blocks: tensors must be on a CUDA device");
    };
    let func = dev.get_or_load_custom_func(
        "dec_mxfp4_unplanar",
        MODULE,
        ptx::for_device(dev, ptx::DECODE)?,
    )?;
    let out = Tensor::zeros((n, nb_row * 17), DType::U8, qs.device())?;
    let nblocks = n * nb_row;
    let (src_q, src_e, dst) = (tensor_ptr(qs)?, tensor_ptr(e8)?, tensor_ptr(&out)?);
    let nb = nblocks as u64;
    let mut b = func.builder();
    b.arg(&src_q).arg(&src_e).arg(&nb).arg(&dst);
    // SAFETY: the arguments match `dec_mxfp4_unplanar`; `out` holds `nblocks * 17` bytes and
    // the sources `nblocks * 16` and `nblocks`, as checked above.
    unsafe { b.launch(cfg((u32_of("blocks", nblocks.div_ceil(256))?, 1), 256)) }.w()?;
    Ok(out)
}
