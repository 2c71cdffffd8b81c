//! Decode attention with sinks over a paged KV pool: many query rows, one per sequence, each
//! reading its own keys through its own block table — the batched decode step's attention
//! (vLLM's paged attention), with no gather of the keys into a dense copy.

use candle_core::{bail, CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu_storage::{contiguous_slice, f32_or_f16, field_to_vec};

const OP: &str = "paged_decode_attention";

/// Whether KV buffers of dtypes `k`, `v` are f16 (both F16) rather than f32 (both F32); any
/// other pair is an error.
pub fn kv_half(k: DType, v: DType) -> Result<bool> {
    match (k, v) {
        (DType::F32, DType::F32) => Ok(false),
        (DType::F16, DType::F16) => Ok(true),
        _ => bail!("KV buffers of {k:?} and {v:?} (need both F32 or both F16)"),
    }
}

/// One query row's keys: its position, the absolute position of logical key row 0, and the
/// pool blocks holding logical rows `0, bs, 2 bs, …`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PagedRow {
    /// Absolute position of the query.
    pub pos: usize,
    /// Absolute position of the first key row of `blocks[0]` (`<= pos`).
    pub kv_offset: usize,
    /// Pool blocks, in logical order; they must cover rows `0..=pos - kv_offset`.
    pub blocks: Vec<u32>,
}

/// The query rows of a batched decode, checked on the host and put on the device once per
/// step (every layer of a KV group reads the same tables).
#[derive(Clone, Debug)]
pub struct PagedRows {
    /// U32 `(rows, width)`: row `r`'s blocks, padded with its last block.
    tables: Tensor,
    /// U32 `(rows, 2)`: `(pos, kv_offset)` per row.
    meta: Tensor,
    /// The largest block id in any table.
    max_block: u32,
    /// The most keys any row sees without a window.
    max_keys: usize,
    block_size: usize,
}

impl PagedRows {
    /// Checks `rows` (each `kv_offset <= pos`, enough blocks for its keys) and uploads them to
    /// `device`. `block_size` is the pool's positions per block.
    pub fn new(rows: &[PagedRow], block_size: usize, device: &Device) -> Result<Self> {
        if rows.is_empty() || block_size == 0 {
            bail!(
                "{OP}: {} rows, block size {block_size} (need rows and a block size)",
                rows.len()
            );
        }
        let mut width = 1;
        let (mut max_block, mut max_keys) = (0u32, 0usize);
        for (r, row) in rows.iter().enumerate() {
            let Some(keys) = (row.pos + 1).checked_sub(row.kv_offset) else {
                bail!(
                    "{OP}: row {r} at position {} starts its keys later, at {}",
                    row.pos,
                    row.kv_offset
                );
            };
            let need = keys.div_ceil(block_size);
            if row.blocks.len() < need {
                bail!(
                    "{OP}: row {r} sees {keys} keys in blocks of {block_size} but has {} blocks",
                    row.blocks.len()
                );
            }
            width = width.max(need);
            max_keys = max_keys.max(keys);
            max_block = max_block.max(row.blocks[..need].iter().copied().max().unwrap_or(0));
        }
        let mut tables = Vec::with_capacity(rows.len() * width);
        let mut meta = Vec::with_capacity(rows.len() * 2);
        for row in rows {
            let need = (row.pos + 1 - row.kv_offset).div_ceil(block_size);
            let last = row.blocks[need - 1];
            tables.extend(row.blocks[..need].iter().copied());
            tables.extend(std::iter::repeat_n(last, width - need));
            let (pos, off) = (u31(row.pos, "position")?, u31(row.kv_offset, "key offset")?);
            meta.extend([pos, off]);
        }
        Ok(Self {
            tables: Tensor::from_vec(tables, (rows.len(), width), device)?,
            meta: Tensor::from_vec(meta, (rows.len(), 2), device)?,
            max_block,
            max_keys,
            block_size,
        })
    }

    /// Query rows.
    pub fn rows(&self) -> usize {
        self.meta.dims()[0]
    }

    /// The block tables, U32 `(rows, width)`.
    pub fn tables(&self) -> &Tensor {
        &self.tables
    }

    /// `(pos, kv_offset)` per row, U32 `(rows, 2)`.
    pub fn meta(&self) -> &Tensor {
        &self.meta
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Keys the longest row sees under `window`.
    pub fn max_keys(&self, window: Option<usize>) -> usize {
        window.map_or(self.max_keys, |w| w.min(self.max_keys))
    }
}

/// The kernels index with i32: positions stay below 2^31.
fn u31(v: usize, what: &str) -> Result<u32> {
    match u32::try_from(v) {
        Ok(x) if x < 1 << 31 => Ok(x),
        _ => bail!("{OP}: {what} {v} is over 2^31"),
    }
}

/// `CustomOp3` behind [`paged_decode_attention`], applied to q `(rows, hq, d)` and the pool's
/// keys and values `(blocks · bs, hkv, d)`; returns `(rows, hq, d)`.
#[derive(Debug, Clone)]
pub struct PagedDecodeAttention {
    /// The rows' tables and positions.
    pub rows: PagedRows,
    /// Contiguous sink logits `(hq)`, on the device of q.
    pub sinks: Tensor,
    /// Multiplier of `q · k`.
    pub scale: f32,
    /// Sliding window (`None`: full causal).
    pub window: Option<usize>,
}

impl PagedDecodeAttention {
    fn check(&self, q: &Layout, k: &Layout, v: &Layout) -> Result<(usize, usize, usize, usize)> {
        let (Ok((r, hq, d)), Ok((n, hkv, kd))) = (q.shape().dims3(), k.shape().dims3()) else {
            bail!(
                "{OP}: q must be (rows, hq, d) and k (blocks * bs, hkv, d), got {:?} and {:?}",
                q.dims(),
                k.dims()
            );
        };
        let bs = self.rows.block_size;
        if v.dims() != k.dims()
            || kd != d
            || hkv == 0
            || hq % hkv != 0
            || r != self.rows.rows()
            || n % bs != 0
            || (self.rows.max_block as usize) >= n / bs
            || self.sinks.dims() != [hq]
        {
            bail!(
                "{OP}: q {:?}, k {:?}, v {:?}, sinks {:?} for {} rows over blocks of {bs} (highest block {})",
                q.dims(),
                k.dims(),
                v.dims(),
                self.sinks.dims(),
                self.rows.rows(),
                self.rows.max_block
            );
        }
        Ok((r, hq, hkv, d))
    }
}

impl CustomOp3 for PagedDecodeAttention {
    fn name(&self) -> &'static str {
        "gpt-kernels/paged-decode-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (r, hq, hkv, d) = self.check(l1, l2, l3)?;
        let q = contiguous_slice::<f32>(s1, l1, OP, "q")?;
        let k = f32_or_f16(s2, l2, OP, "k")?;
        let v = f32_or_f16(s3, l3, OP, "v")?;
        let sinks = field_to_vec::<f32>(&self.sinks, OP, "sinks")?;
        let tables = field_to_vec::<u32>(&self.rows.tables, OP, "tables")?;
        let meta = field_to_vec::<u32>(&self.rows.meta, OP, "meta")?;
        let width = self.rows.tables.dims()[1];
        let (bs, g) = (self.rows.block_size, hq / hkv);
        let mut out = vec![0f32; r * hq * d];
        out.par_chunks_mut(d).enumerate().for_each(|(rh, o)| {
            let (row, h) = (rh / hq, rh % hq);
            let (pos, off) = (meta[2 * row] as usize, meta[2 * row + 1] as usize);
            let hi = pos - off;
            let lo = self
                .window
                .map_or(0, |w| (pos + 1).saturating_sub(w).saturating_sub(off));
            let table = &tables[row * width..(row + 1) * width];
            let qh = &q[rh * d..(rh + 1) * d];
            let key = |j: usize| ((table[j / bs] as usize * bs + j % bs) * hkv + h / g) * d;
            let scores: Vec<f32> = (lo..=hi)
                .map(|j| {
                    let kr = &k[key(j)..key(j) + d];
                    qh.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() * self.scale
                })
                .collect();
            let m = scores.iter().copied().fold(sinks[h], f32::max);
            let mut den = (sinks[h] - m).exp();
            for (s, j) in scores.iter().zip(lo..=hi) {
                let p = (s - m).exp();
                den += p;
                for (oc, vc) in o.iter_mut().zip(&v[key(j)..key(j) + d]) {
                    *oc += p * vc;
                }
            }
            o.iter_mut().for_each(|x| *x /= den);
        });
        Ok((CpuStorage::F32(out), Shape::from((r, hq, d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let dims = self.check(l1, l2, l3)?;
        let (r, hq, _, d) = dims;
        let out = crate::cuda::attention::paged_decode(self, dims, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, Shape::from((r, hq, d))))
    }
}

/// Decode attention with sinks for `rows` query rows over a paged pool.
///
/// * `q`: f32 `(rows, hq, d)`, row `r` the query of [`PagedRows`] row `r`; head `h` reads KV
///   head `h / (hq / hkv)`.
/// * `k`, `v`: f32 or f16 (both alike) `(blocks · bs, hkv, d)`, the pool's buffers: logical key row `j` of row `r`
///   (absolute position `kv_offset + j`) is pool row `blocks[j / bs] · bs + j % bs`.
/// * `sinks`: f32 `(hq)`; `window`: `Some(w)` keeps keys with `pos − key < w`.
///
/// The query at `pos` sees keys `kv_offset..=pos` (within the window), with the softmax of
/// [`crate::attention_with_sinks`]. Returns `(rows, hq, d)`. On CUDA (head dim 32 or 64, at
/// most 32 query heads per KV head) it runs the fused decode's split attention, one launch for
/// all rows.
pub fn paged_decode_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    sinks: &Tensor,
    rows: &PagedRows,
    scale: f32,
    window: Option<usize>,
) -> Result<Tensor> {
    if [q, sinks].iter().any(|t| t.dtype() != DType::F32) || kv_half(k.dtype(), v.dtype()).is_err()
    {
        bail!(
            "{OP}: q, sinks must be f32 and k, v both f32 or both f16, got {:?}, {:?}, {:?}, {:?}",
            q.dtype(),
            k.dtype(),
            v.dtype(),
            sinks.dtype()
        );
    }
    if window == Some(0) {
        bail!("{OP}: window must be >= 1");
    }
    let dev = q.device();
    if [k, v, sinks, &rows.tables]
        .iter()
        .any(|t| !t.device().same_device(dev))
    {
        bail!("{OP}: q, k, v, sinks and the rows' tables must be on one device");
    }
    let op = PagedDecodeAttention {
        rows: rows.clone(),
        sinks: sinks.contiguous()?,
        scale,
        window,
    };
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op) // (rows, hq, d)
}
