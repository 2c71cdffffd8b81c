//! The batched forward's RoPE and KV-pool write in one launch (`kernels/rope_kv.cu`), in
//! place of slicing q, k and v out of the fused QKV projection, rotating q and k, and
//! scattering k and v into the pool: one kernel per layer instead of about ten.

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{DType, Device, Result, Tensor};

use super::decode::{tensor_ptr, KvPtrs};
use super::prefill::{bail, cuda_dev, u32_of};
use super::ptx;

const OP: &str = "rope_kv_rows";

/// Where each row of a forward goes: its position and its row of the KV pool, on the device,
/// with their bounds checked on the host.
#[derive(Clone, Debug)]
pub struct KvRows {
    pos: Tensor,
    dst: Tensor,
    max_pos: u32,
    max_dst: u32,
}

impl KvRows {
    /// Rows at positions `pos` writing pool rows `dst` (one of each per row).
    pub fn new(pos: &[u32], dst: &[u32], device: &Device) -> Result<Self> {
        if pos.len() != dst.len() || pos.is_empty() {
            return bail(
                OP,
                format!("{} positions for {} pool rows", pos.len(), dst.len()),
            );
        }
        Ok(Self {
            pos: Tensor::from_slice(pos, pos.len(), device)?,
            dst: Tensor::from_slice(dst, dst.len(), device)?,
            max_pos: pos.iter().copied().max().unwrap_or(0),
            max_dst: dst.iter().copied().max().unwrap_or(0),
        })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.pos.dims()[0]
    }

    /// One past the largest position (the RoPE tables must reach it).
    pub fn end(&self) -> usize {
        self.max_pos as usize + 1
    }
}

/// RoPE on the q and k heads of `qkv` F32 `(t, (hq + 2 hkv) hd)` at `rows`' positions (`cos`,
/// `sin` F32 `(len ≥ rows.end(), hd / 2)`, NeoX pairs `(i, i + hd/2)`), k and v written to
/// `rows`' pool rows of `k_pool`, `v_pool` `(n, hkv, hd)` (both F32 or both F16, rounded to
/// nearest); returns q F32 `(t, hq, hd)`.
pub fn rope_kv_rows(
    qkv: &Tensor,
    (cos, sin): (&Tensor, &Tensor),
    rows: &KvRows,
    (k_pool, v_pool): (&Tensor, &Tensor),
    (hq, hkv, hd): (usize, usize, usize),
) -> Result<Tensor> {
    let (t, width) = qkv.dims2()?;
    let (len, half) = cos.dims2()?;
    let (n, pk, pd) = k_pool.dims3()?;
    let kv = KvPtrs::of(k_pool, v_pool);
    let ok = [qkv, cos, sin].iter().all(|x| x.dtype() == DType::F32)
        && kv.is_ok()
        && width == (hq + 2 * hkv) * hd
        && hd % 2 == 0
        && half * 2 == hd
        && sin.dims() == cos.dims()
        && rows.rows() == t
        && rows.end() <= len
        && (rows.max_dst as usize) < n
        && (pk, pd) == (hkv, hd)
        && v_pool.dims() == k_pool.dims()
        && k_pool.is_contiguous()
        && v_pool.is_contiguous();
    if !ok {
        return bail(
            OP,
            format!(
                "qkv {:?}, cos/sin {:?}/{:?}, pools {:?}/{:?} ({:?}/{:?}) for {t} rows of heads {hq}/{hkv}/{hd}, positions to {}, pool rows to {}",
                qkv.dims(),
                cos.dims(),
                sin.dims(),
                k_pool.dims(),
                v_pool.dims(),
                k_pool.dtype(),
                v_pool.dtype(),
                rows.max_pos,
                rows.max_dst
            ),
        );
    }
    let dev = cuda_dev(OP, qkv)?;
    let (qkv, cos, sin) = (qkv.contiguous()?, cos.contiguous()?, sin.contiguous()?);
    // SAFETY: the kernel writes every element of every row's q.
    let q = unsafe { Tensor::empty((t, hq, hd), DType::F32, qkv.device())? };
    let kv = kv?;
    let f = dev.get_or_load_custom_func(
        kv.kernel("rope_kv_rows", "rope_kv_rows_h"),
        "gpt_kernels::rope_kv",
        ptx::for_device(dev, ptx::ROPE_KV)?,
    )?;
    let p = [
        tensor_ptr(&qkv)?,
        tensor_ptr(&cos)?,
        tensor_ptr(&sin)?,
        tensor_ptr(&rows.pos)?,
        tensor_ptr(&rows.dst)?,
    ];
    let dims = [
        u32_of(OP, "hq", hq)?,
        u32_of(OP, "hkv", hkv)?,
        u32_of(OP, "hd", hd)?,
    ];
    let out = [tensor_ptr(&q)?, kv.k, kv.v];
    let mut b = f.builder();
    for a in &p {
        b.arg(a);
    }
    for a in &dims {
        b.arg(a);
    }
    for a in &out {
        b.arg(a);
    }
    let cfg = LaunchConfig {
        grid_dim: (u32_of(OP, "rows", t)?, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments follow `rope_kv_rows`' parameter list; positions are below the
    // tables' length and pool rows below the pool's (checked on the host when `rows` was
    // built and above).
    unsafe { b.launch(cfg) }.w()?;
    Ok(q)
}
