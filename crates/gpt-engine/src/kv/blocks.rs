//! The block allocator of one KV group: reference counts, an LRU queue of free blocks, and the
//! prefix cache's map from a full block's key to the block holding it (vLLM's `BlockPool`).
//!
//! A block is either held (`refs > 0`) or free (in the queue). A free block keeps its cached
//! contents until it is handed out again: a later request whose prefix matches takes it back
//! from the queue at no cost; allocation evicts the least recently freed block first.

use std::collections::{BTreeMap, HashMap};

/// What a full block holds, for the prefix cache: the hash of its parent chain and its tokens
/// (kept to tell a hash collision from a hit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlockKey {
    /// Hash of (parent's hash, tokens).
    pub hash: u64,
    /// Hash of the previous block (0 for the first).
    pub parent: u64,
    /// The block's tokens.
    pub tokens: Vec<u32>,
}

impl BlockKey {
    /// The key of a block of `tokens` after the block hashed `parent`.
    pub(crate) fn new(parent: u64, tokens: &[u32]) -> Self {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        parent.hash(&mut h);
        tokens.hash(&mut h);
        // Never 0, the parent of the first block.
        let hash = h.finish().max(1);
        Self {
            hash,
            parent,
            tokens: tokens.to_vec(),
        }
    }
}

/// Blocks `0..n` of one group.
#[derive(Debug)]
pub(crate) struct BlockGroup {
    refs: Vec<u32>,
    /// The cache key of a block registered in `cached`.
    key: Vec<Option<BlockKey>>,
    /// Free blocks by the tick they were freed at (oldest first).
    free: BTreeMap<u64, u32>,
    /// Each free block's tick in `free`.
    free_at: Vec<Option<u64>>,
    /// Cached full blocks by hash.
    cached: HashMap<u64, u32>,
    tick: u64,
}

impl BlockGroup {
    /// `n` free, empty blocks.
    pub(crate) fn new(n: usize) -> Self {
        let mut g = Self {
            refs: vec![0; n],
            key: vec![None; n],
            free: BTreeMap::new(),
            free_at: vec![None; n],
            cached: HashMap::new(),
            tick: 0,
        };
        for b in 0..n as u32 {
            g.push_free(b);
        }
        g
    }

    fn push_free(&mut self, b: u32) {
        self.tick += 1;
        self.free.insert(self.tick, b);
        self.free_at[b as usize] = Some(self.tick);
    }

    fn take_free(&mut self, b: u32) {
        if let Some(t) = self.free_at[b as usize].take() {
            self.free.remove(&t);
        }
    }

    /// Blocks in the group.
    pub(crate) fn capacity(&self) -> usize {
        self.refs.len()
    }

    /// Blocks not held by any sequence (cached or empty).
    pub(crate) fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Blocks whose contents the prefix cache can hand out.
    pub(crate) fn cached_count(&self) -> usize {
        self.cached.len()
    }

    /// Takes the least recently freed block (its cached contents are forgotten), or `None`
    /// when every block is held.
    pub(crate) fn alloc(&mut self) -> Option<u32> {
        let (_, b) = self.free.pop_first()?;
        self.free_at[b as usize] = None;
        if let Some(k) = self.key[b as usize].take() {
            self.cached.remove(&k.hash);
        }
        self.refs[b as usize] = 1;
        Some(b)
    }

    /// Drops one reference to `b`; at zero it joins the free queue, keeping its cached contents.
    pub(crate) fn release(&mut self, b: u32) {
        let r = &mut self.refs[b as usize];
        debug_assert!(*r > 0, "release of free block {b}");
        *r = r.saturating_sub(1);
        if *r == 0 {
            self.push_free(b);
        }
    }

    /// The cached block holding `key`'s contents.
    pub(crate) fn lookup(&self, key: &BlockKey) -> Option<u32> {
        let b = *self.cached.get(&key.hash)?;
        (self.key[b as usize].as_ref() == Some(key)).then_some(b)
    }

    /// Takes a reference to the cached block `b` (from the free queue if no one holds it).
    pub(crate) fn acquire(&mut self, b: u32) {
        if self.refs[b as usize] == 0 {
            self.take_free(b);
        }
        self.refs[b as usize] += 1;
    }

    /// Records that the held block `b` is full with `key`'s contents. A block already caching
    /// the same contents stays the cached one.
    pub(crate) fn register(&mut self, b: u32, key: BlockKey) {
        if self.cached.contains_key(&key.hash) || self.key[b as usize].is_some() {
            return;
        }
        self.cached.insert(key.hash, b);
        self.key[b as usize] = Some(key);
    }

    /// References held on `b`.
    #[cfg(test)]
    pub(crate) fn refs(&self, b: u32) -> u32 {
        self.refs[b as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_eviction_and_cache_hits() {
        let mut g = BlockGroup::new(3);
        let a = g.alloc().unwrap();
        let b = g.alloc().unwrap();
        let ka = BlockKey::new(0, &[1, 2]);
        let kb = BlockKey::new(ka.hash, &[3, 4]);
        g.register(a, ka.clone());
        g.register(b, kb.clone());
        g.release(a);
        g.release(b);
        assert_eq!(g.free_count(), 3);
        assert_eq!(g.lookup(&ka), Some(a));
        // A hit takes the block back out of the free queue.
        g.acquire(a);
        assert_eq!((g.refs(a), g.free_count()), (1, 2));
        // Allocation hands out the never-used block first, then the oldest freed one (b),
        // forgetting what it cached.
        let c = g.alloc().unwrap();
        assert!(c != a && c != b);
        assert_eq!(g.alloc(), Some(b));
        assert_eq!(g.lookup(&kb), None);
        assert_eq!(g.alloc(), None, "all held");
        assert_eq!(g.lookup(&ka), Some(a), "held blocks stay cached");
    }

    #[test]
    fn a_hash_collision_is_not_a_hit() {
        let mut g = BlockGroup::new(1);
        let a = g.alloc().unwrap();
        let k = BlockKey::new(0, &[5, 6]);
        g.register(a, k.clone());
        let forged = BlockKey {
            tokens: vec![7, 8],
            ..k.clone()
        };
        assert_eq!(g.lookup(&forged), None);
        assert_eq!(g.lookup(&k), Some(a));
    }
}
