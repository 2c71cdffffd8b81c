//! The KV cache: per layer, keys (after RoPE) and values of past positions.
//!
//! Full-attention layers grow to the context; sliding layers keep only the positions a future
//! query can still see (the last `window - 1`), so their memory stays bounded however long the
//! conversation. Positions stay absolute: `kv_offset` is the position of the first kept key.

use candle_core::{Result, Tensor};

/// One layer's cache.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    /// Keys `(1, s, hkv, d)`.
    k: Option<Tensor>,
    /// Values `(1, s, hkv, d)`.
    v: Option<Tensor>,
    /// Absolute position of the first cached key.
    kv_offset: usize,
    /// `Some(w)` on sliding layers.
    window: Option<usize>,
}

impl LayerCache {
    /// An empty cache; `window` on sliding layers.
    pub fn new(window: Option<usize>) -> Self {
        Self {
            window,
            ..Default::default()
        }
    }

    /// Appends `k`, `v` `(1, t, hkv, d)` and returns all keys and values a query at the new
    /// positions may need, with the absolute position of their first row.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor, usize)> {
        let (k_all, v_all) = match (&self.k, &self.v) {
            (Some(pk), Some(pv)) => (Tensor::cat(&[pk, k], 1)?, Tensor::cat(&[pv, v], 1)?),
            _ => (k.clone(), v.clone()),
        };
        let offset = self.kv_offset;
        let s = k_all.dim(1)?;
        match self.window {
            Some(w) if s > w.saturating_sub(1) => {
                let keep = w.saturating_sub(1);
                self.k = Some(k_all.narrow(1, s - keep, keep)?.contiguous()?);
                self.v = Some(v_all.narrow(1, s - keep, keep)?.contiguous()?);
                self.kv_offset = offset + s - keep;
            }
            _ => {
                self.k = Some(k_all.clone());
                self.v = Some(v_all.clone());
            }
        }
        Ok((k_all, v_all, offset))
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.k.as_ref().map(|k| k.dim(1).unwrap_or(0)).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// Forgets everything.
    pub fn reset(&mut self) {
        for l in &mut self.layers {
            *l = LayerCache::new(l.window);
        }
        self.pos = 0;
        self.tokens.clear();
    }
}
