//! Byte-level BPE over one pre-tokenized piece.
//!
//! Semantics are tiktoken's: two adjacent parts may merge when their byte
//! concatenation is a token; among all such pairs the one whose token has the
//! lowest merge rank merges first (leftmost on ties), until no pair merges.
//! A token's merge rank is the index of the first `tokenizer.ggml.merges`
//! entry that produces it, which for vocabularies converted from tiktoken is
//! monotone in the tiktoken rank.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// Pieces at least this long use the O(n log n) heap merge instead of the
/// O(n²) scan.
const HEAP_THRESHOLD: usize = 128;

/// Sentinel rank: "does not merge".
pub const NO_RANK: u32 = u32::MAX;

/// Byte-string → id table plus per-id merge rank.
#[derive(Debug, Clone)]
pub struct BpeModel {
    /// Normal (byte-level) token bytes → id.
    pub encoder: FxHashMap<Vec<u8>, u32>,
    /// Merge rank per token id, [`NO_RANK`] when no merge produces it.
    pub rank: Vec<u32>,
}

impl BpeModel {
    /// Rank of merging `bytes` into one token, [`NO_RANK`] if impossible.
    #[inline]
    fn pair_rank(&self, bytes: &[u8]) -> u32 {
        match self.encoder.get(bytes) {
            Some(&id) => self.rank[id as usize],
            None => NO_RANK,
        }
    }

    /// Token id of a byte string that BPE produced (always present).
    #[inline]
    fn id_of(&self, bytes: &[u8]) -> Option<u32> {
        self.encoder.get(bytes).copied()
    }

    /// Appends the ids of `piece` to `out`. `Err(byte)` when a byte has no token.
    pub fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) -> Result<(), u8> {
        if let Some(id) = self.id_of(piece) {
            out.push(id);
            return Ok(());
        }
        let bounds = if piece.len() < HEAP_THRESHOLD {
            self.merge_scan(piece)
        } else {
            self.merge_heap(piece)
        };
        for w in bounds.windows(2) {
            let part = &piece[w[0]..w[1]];
            match self.id_of(part) {
                Some(id) => out.push(id),
                None => return Err(part[0]),
            }
        }
        Ok(())
    }

    /// Quadratic merge: returns part boundaries (len parts + 1).
    fn merge_scan(&self, piece: &[u8]) -> Vec<usize> {
        // parts[i] = (start of part i, rank of merging part i with part i+1)
        let n = piece.len();
        let mut parts: Vec<(usize, u32)> = Vec::with_capacity(n + 1);
        for i in 0..n {
            let r = if i + 2 <= n {
                self.pair_rank(&piece[i..i + 2])
            } else {
                NO_RANK
            };
            parts.push((i, r));
        }
        parts.push((n, NO_RANK));
        // rank of the merge of parts[i] and parts[i+1] given current boundaries
        let rank_at = |parts: &[(usize, u32)], i: usize| -> u32 {
            if i + 2 < parts.len() {
                self.pair_rank(&piece[parts[i].0..parts[i + 2].0])
            } else {
                NO_RANK
            }
        };
        loop {
            let mut best = (NO_RANK, 0usize);
            for (i, &(_, r)) in parts[..parts.len() - 1].iter().enumerate() {
                if r < best.0 {
                    best = (r, i);
                }
            }
            if best.0 == NO_RANK {
                break;
            }
            let i = best.1;
            parts.remove(i + 1);
            parts[i].1 = rank_at(&parts, i);
            if i > 0 {
                parts[i - 1].1 = rank_at(&parts, i - 1);
            }
        }
        parts.into_iter().map(|(s, _)| s).collect()
    }

    /// Heap merge with lazy invalidation: same result as [`Self::merge_scan`].
    fn merge_heap(&self, piece: &[u8]) -> Vec<usize> {
        let n = piece.len();
        // Parts are identified by their start offset; next[s] is the start of
        // the following part (n for the last), prev[s] the preceding one.
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        // (rank, left start, right start, right end)
        let mut heap: BinaryHeap<Reverse<(u32, usize, usize, usize)>> = BinaryHeap::new();
        for i in 0..n.saturating_sub(1) {
            let r = self.pair_rank(&piece[i..i + 2]);
            if r != NO_RANK {
                heap.push(Reverse((r, i, i + 1, i + 2)));
            }
        }
        while let Some(Reverse((_, left, right, end))) = heap.pop() {
            let valid = alive[left] && next[left] == right && alive[right] && next[right] == end;
            if !valid {
                continue;
            }
            alive[right] = false;
            next[left] = end;
            if end < n {
                prev[end] = left;
            }
            let p = prev[left];
            if p != usize::MAX {
                let r = self.pair_rank(&piece[p..end]);
                if r != NO_RANK {
                    heap.push(Reverse((r, p, left, end)));
                }
            }
            if end < n {
                let after = next[end];
                let r = self.pair_rank(&piece[left..after]);
                if r != NO_RANK {
                    heap.push(Reverse((r, left, end, after)));
                }
            }
        }
        let mut bounds = Vec::new();
        let mut s = 0;
        while s < n {
            bounds.push(s);
            s = next[s];
        }
        bounds.push(n);
        bounds
    }
}
