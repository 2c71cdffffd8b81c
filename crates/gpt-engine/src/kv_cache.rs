//! The KV cache: per layer, keys (after RoPE) and values of past positions, in preallocated
//! buffers written in place (no per-token copy of the whole cache).
//!
//! Full-attention layers grow to the context (capacity doubles). Sliding layers keep only the
//! positions a future query can still see (the last `window - 1`): when their buffer fills up,
//! those rows move to its front, so memory stays bounded however long the conversation and the
//! copy is amortized. Positions stay absolute: `kv_offset` is the position of row 0; rows older
//! than the window that are still in the buffer are masked by the attention kernel.

use candle_core::{Result, Tensor};

/// Rows a sliding buffer holds beyond the window before it compacts.
const SLIDING_SLACK: usize = 512;

/// One layer's cache.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    /// Keys `(1, cap, hkv, d)`.
    k: Option<Tensor>,
    /// Values `(1, cap, hkv, d)`.
    v: Option<Tensor>,
    /// Rows in use.
    len: usize,
    /// Absolute position of row 0.
    kv_offset: usize,
    /// `Some(w)` on sliding layers.
    window: Option<usize>,
    /// Extra rows of a sliding buffer beyond the window; initial rows of a full one.
    slack: usize,
}

fn grow(buf: &Tensor, len: usize, cap: usize) -> Result<Tensor> {
    let (b, _, h, d) = buf.dims4()?;
    let new = Tensor::zeros((b, cap, h, d), buf.dtype(), buf.device())?; // (1, cap, hkv, d)
    if len > 0 {
        new.slice_set(&buf.narrow(1, 0, len)?, 1, 0)?;
    }
    Ok(new)
}

impl LayerCache {
    /// An empty cache; `window` on sliding layers.
    pub fn new(window: Option<usize>) -> Self {
        Self::with_slack(window, SLIDING_SLACK)
    }

    /// An empty cache whose sliding buffer holds `slack` rows beyond the window (and whose
    /// full buffer starts with `slack` rows).
    pub fn with_slack(window: Option<usize>, slack: usize) -> Self {
        Self {
            window,
            slack: slack.max(1),
            ..Default::default()
        }
    }

    /// Makes room for `t` more rows.
    fn reserve(&mut self, t: usize) -> Result<()> {
        let (Some(k), Some(v)) = (&self.k, &self.v) else {
            return Ok(());
        };
        let cap = k.dim(1)?;
        if self.len + t <= cap {
            return Ok(());
        }
        if let Some(w) = self.window {
            let keep = w.saturating_sub(1).min(self.len);
            if keep + t <= cap {
                let from = self.len - keep;
                // (1, keep, hkv, d) copied out first: source and destination may overlap.
                let ks = k.narrow(1, from, keep)?.copy()?;
                let vs = v.narrow(1, from, keep)?.copy()?;
                if keep > 0 {
                    k.slice_set(&ks, 1, 0)?;
                    v.slice_set(&vs, 1, 0)?;
                }
                self.kv_offset += from;
                self.len = keep;
                return Ok(());
            }
        }
        let new_cap = (cap * 2).max(self.len + t);
        self.k = Some(grow(k, self.len, new_cap)?);
        self.v = Some(grow(v, self.len, new_cap)?);
        Ok(())
    }

    /// Makes room for `t` more rows of `(hkv, d)` f32 on `device` (allocating on first use) and
    /// returns the key and value buffers `(1, cap, hkv, d)`, the row the first new position
    /// goes to, and the absolute position of row 0. The rows count only after [`Self::advance`].
    pub fn reserve_rows(
        &mut self,
        t: usize,
        (hkv, d): (usize, usize),
        device: &candle_core::Device,
    ) -> Result<(Tensor, Tensor, usize, usize)> {
        if self.k.is_none() {
            let cap = match self.window {
                Some(w) => w + self.slack.max(t),
                None => t.max(self.slack),
            };
            let shape = (1, cap, hkv, d);
            self.k = Some(Tensor::zeros(shape, candle_core::DType::F32, device)?);
            self.v = Some(Tensor::zeros(shape, candle_core::DType::F32, device)?);
        }
        self.reserve(t)?;
        match (&self.k, &self.v) {
            (Some(kb), Some(vb)) => Ok((kb.clone(), vb.clone(), self.len, self.kv_offset)),
            _ => candle_core::bail!("kv cache: buffers missing after reserve"),
        }
    }

    /// Counts `t` rows written after [`Self::reserve_rows`].
    pub fn advance(&mut self, t: usize) {
        self.len += t;
    }

    /// Appends `k`, `v` `(1, t, hkv, d)` and returns all cached keys and values a query at the
    /// new positions may need, `(1, s, hkv, d)`, with the absolute position of their first row.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor, usize)> {
        let (_, t, h, d) = k.dims4()?;
        if k.dtype() != candle_core::DType::F32 {
            candle_core::bail!("kv cache: keys must be f32, got {:?}", k.dtype());
        }
        let (kb, vb, row, kv_offset) = self.reserve_rows(t, (h, d), k.device())?;
        kb.slice_set(&k.contiguous()?, 1, row)?;
        vb.slice_set(&v.contiguous()?, 1, row)?;
        self.advance(t);
        Ok((
            kb.narrow(1, 0, self.len)?,
            vb.narrow(1, 0, self.len)?,
            kv_offset,
        ))
    }

    /// Number of cached rows (for sliding layers, possibly more than the window).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The cache of every layer, and the number of positions already processed.
#[derive(Clone, Debug)]
pub struct KvCache {
    /// Per-layer caches.
    pub layers: Vec<LayerCache>,
    /// Positions processed so far (the next token's position).
    pub pos: usize,
    /// Tokens processed so far, for reuse across turns.
    pub tokens: Vec<u32>,
}

impl KvCache {
    /// An empty cache for layers whose windows are `windows[il]`.
    pub fn new(windows: &[Option<usize>]) -> Self {
        Self {
            layers: windows.iter().map(|&w| LayerCache::new(w)).collect(),
            pos: 0,
            tokens: Vec::new(),
        }
    }

    /// Forgets everything (buffers are dropped).
    pub fn reset(&mut self) {
        for l in &mut self.layers {
            *l = LayerCache::with_slack(l.window, l.slack);
        }
        self.pos = 0;
        self.tokens.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Appends random chunks and checks, after each, that every row a query can still see
    /// equals the same row of a plain concatenation (the slow reference).
    fn check(window: Option<usize>, slack: usize, chunks: &[usize]) {
        let dev = Device::Cpu;
        let mut cache = LayerCache::with_slack(window, slack);
        let mut all: Vec<Tensor> = Vec::new();
        let mut pos = 0;
        for (i, &t) in chunks.iter().enumerate() {
            let k = Tensor::randn(0f32, 1., (1, t, 2, 3), &dev).unwrap();
            let v = Tensor::randn(0f32, 1., (1, t, 2, 3), &dev).unwrap();
            all.push(Tensor::cat(&[&k, &v], 3).unwrap());
            let (kc, vc, off) = cache.append(&k, &v).unwrap();
            pos += t;
            let reference = Tensor::cat(&all, 1).unwrap(); // (1, pos, 2, 6)
            let got = Tensor::cat(&[&kc, &vc], 3).unwrap();
            assert_eq!(
                off + got.dim(1).unwrap(),
                pos,
                "chunk {i}: rows end at the last position"
            );
            // The oldest position the first new query (at pos - t) may see.
            let first_visible = match window {
                Some(w) => (pos - t + 1).saturating_sub(w),
                None => 0,
            };
            assert!(
                off <= first_visible,
                "chunk {i}: row {first_visible} evicted (offset {off})"
            );
            let want = reference.narrow(1, off, pos - off).unwrap();
            let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "chunk {i}");
        }
        if let Some(w) = window {
            assert!(
                cache.len() <= w + slack.max(*chunks.iter().max().unwrap()),
                "bounded"
            );
        }
    }

    /// The contract the CUDA decode graph relies on: `reserve_rows` hands out the row a token
    /// goes to and the position of row 0; a sliding buffer compacts in place (same allocation),
    /// a full one moves only when it grows.
    #[test]
    fn reserve_rows_moves_buffers_only_when_a_full_layer_grows() {
        use candle_core::{CpuStorage, Storage};
        fn addr(t: &Tensor) -> usize {
            match &*t.storage_and_layout().0 {
                Storage::Cpu(CpuStorage::F32(v)) => v.as_ptr() as usize,
                _ => panic!("expected f32 CPU storage"),
            }
        }
        let dev = Device::Cpu;
        for window in [Some(3), None] {
            let mut c = LayerCache::with_slack(window, 2);
            let mut first = None;
            let mut moves = 0;
            for pos in 0..12usize {
                let (kb, vb, row, off) = c.reserve_rows(1, (1, 2), &dev).unwrap();
                assert_eq!(row + off, pos, "{window:?} pos {pos}: row + offset");
                let a = addr(&kb);
                if first.is_some_and(|f| f != a) {
                    moves += 1;
                }
                first = Some(a);
                let kv = Tensor::full(pos as f32, (1, 1, 1, 2), &dev).unwrap();
                kb.slice_set(&kv, 1, row).unwrap();
                vb.slice_set(&kv, 1, row).unwrap();
                c.advance(1);
                // Every row still held is its own position, in order.
                let held: Vec<f32> = kb
                    .narrow(1, 0, c.len())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let want: Vec<f32> = (off..=pos).flat_map(|p| [p as f32; 2]).collect();
                assert_eq!(held, want, "{window:?} pos {pos}");
            }
            // Sliding: cap 3 + 2 compacts in place. Full: 2 → 4 → 8 → 16 rows.
            let want_moves = if window.is_some() { 0 } else { 3 };
            assert_eq!(moves, want_moves, "{window:?}: buffer moves");
        }
    }

    #[test]
    fn full_layers_grow_and_keep_everything() {
        check(None, 2, &[1, 3, 1, 1, 5, 2, 1, 1, 1, 9]);
    }

    #[test]
    fn sliding_layers_compact_and_stay_bounded() {
        check(
            Some(4),
            2,
            &[1, 1, 1, 1, 1, 1, 1, 3, 1, 1, 6, 1, 2, 1, 1, 1],
        );
        check(Some(3), 1, &[5, 1, 1, 2, 1, 1, 1, 1]);
    }
}
