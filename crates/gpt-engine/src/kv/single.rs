//! One sequence with a pool of its own: what single-conversation tools and tests use.

use candle_core::Device;
use gpt_weights::GptOssConfig;

use super::{KvPool, KvPoolConfig, KvType, SeqId, DEFAULT_BLOCK_SIZE};
use crate::error::Result;

/// A [`KvPool`] sized for one sequence of `ctx` positions, holding that sequence.
#[derive(Debug)]
pub struct KvCache {
    pool: KvPool,
    seq: SeqId,
}

impl KvCache {
    /// A cache for `ctx` positions of `kv_type`, prefilled in chunks of at most `max_chunk`
    /// tokens.
    pub fn new(
        cfg: &GptOssConfig,
        device: &Device,
        ctx: usize,
        max_chunk: usize,
        kv_type: KvType,
    ) -> Result<Self> {
        let bs = DEFAULT_BLOCK_SIZE;
        let full = ctx.max(1).div_ceil(bs) + 1;
        let sliding =
            (cfg.sliding_window.saturating_sub(1).div_ceil(bs) + 2 + max_chunk.max(1).div_ceil(bs))
                .min(full + 1);
        let mut pool = KvPool::new(
            cfg,
            device,
            KvPoolConfig {
                block_size: bs,
                full_blocks: full,
                sliding_blocks: sliding,
                prefix_cache: false,
                kv_type,
            },
        )?;
        let seq = pool.add_sequence(&[]);
        Ok(Self { pool, seq })
    }

    /// The pool and the sequence in it.
    pub fn parts(&mut self) -> (&mut KvPool, SeqId) {
        (&mut self.pool, self.seq)
    }

    /// The pool.
    pub fn pool(&self) -> &KvPool {
        &self.pool
    }

    /// The next token's position.
    pub fn pos(&self) -> usize {
        self.pool.len(self.seq).unwrap_or(0)
    }

    /// Tokens held.
    pub fn tokens(&self) -> &[u32] {
        self.pool.tokens(self.seq).unwrap_or(&[])
    }

    /// Forgets everything held.
    pub fn reset(&mut self) -> Result<()> {
        self.pool.remove_sequence(self.seq)?;
        self.seq = self.pool.add_sequence(&[]);
        Ok(())
    }
}
