//! A batch of rows from several sequences for one forward: each sequence contributes one chunk
//! of consecutive tokens (a decode token, or a piece of its prompt) placed after what the
//! [`KvPool`](crate::kv::KvPool) already holds for it, and says which of its rows produce
//! logits.

use crate::error::{EngineError, Result};
use crate::kv::SeqId;

/// Which rows of a chunk produce logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// None (a prompt chunk that is not the last).
    None,
    /// The chunk's last row.
    Last,
    /// Every row.
    All,
}

/// One sequence's tokens in a batch.
#[derive(Clone, Debug)]
pub struct Chunk {
    /// The sequence.
    pub seq: SeqId,
    /// Its next tokens (at least one).
    pub tokens: Vec<u32>,
    /// Which rows produce logits.
    pub logits: Logits,
}

/// Chunks of distinct sequences, run together by one forward.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    chunks: Vec<Chunk>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch of one chunk.
    pub fn single(seq: SeqId, tokens: &[u32], logits: Logits) -> Result<Self> {
        let mut b = Self::new();
        b.push(seq, tokens, logits)?;
        Ok(b)
    }

    /// Adds `tokens` of `seq`; a sequence may appear once, with at least one token.
    pub fn push(&mut self, seq: SeqId, tokens: &[u32], logits: Logits) -> Result<()> {
        if tokens.is_empty() {
            return Err(EngineError::EmptyInput);
        }
        if self.chunks.iter().any(|c| c.seq == seq) {
            return Err(EngineError::Other(format!(
                "batch: sequence {} appears twice",
                seq.0
            )));
        }
        self.chunks.push(Chunk {
            seq,
            tokens: tokens.to_vec(),
            logits,
        });
        Ok(())
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// Whether the batch has no chunk.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Rows (tokens) in the batch.
    pub fn rows(&self) -> usize {
        self.chunks.iter().map(|c| c.tokens.len()).sum()
    }

    /// Every token, chunk after chunk.
    pub fn tokens(&self) -> Vec<u32> {
        self.chunks
            .iter()
            .flat_map(|c| c.tokens.iter().copied())
            .collect()
    }

    /// The rows that produce logits, in order, as indices into [`Self::tokens`].
    pub fn logit_rows(&self) -> Vec<u32> {
        let mut rows = Vec::new();
        let mut at = 0u32;
        for c in &self.chunks {
            let t = c.tokens.len() as u32;
            match c.logits {
                Logits::None => {}
                Logits::Last => rows.push(at + t - 1),
                Logits::All => rows.extend(at..at + t),
            }
            at += t;
        }
        rows
    }
}
