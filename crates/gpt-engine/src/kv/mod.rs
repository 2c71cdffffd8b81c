//! Paged KV memory: one pool of fixed-size blocks per layer kind, allocated once; a block table
//! per sequence; a prefix cache of full blocks shared by reference count.
//!
//! The layers fall into two groups: full-attention layers, whose tables grow with the
//! sequence, and sliding-window layers, which give back every block behind their window (a
//! query at position `p` sees keys `> p - window`). Block `j` of a sequence holds positions
//! `j*bs..(j+1)*bs` in every layer of its group, so one table serves the whole group
//! (vLLM's KV cache groups).
//!
//! A full block is keyed by the hash of (its parent block's hash, its tokens). When a request
//! arrives, the longest chain of cached blocks that starts its prompt is taken back (the
//! sliding group needs the blocks of the last window before the cut, else the cut moves
//! earlier), and only the rest is computed. Freed blocks keep their contents until they are
//! handed out again (least recently freed first), so a finished conversation's prefix stays
//! reusable while memory allows.
//!
//! The pool keeps its invariants itself: a forward [`KvPool::begin`]s a step (reserving the
//! blocks of the new tokens, or failing with nothing changed), writes and reads through it,
//! then [`KvPool::commit`]s it (tokens counted, full blocks cached, blocks behind a window
//! freed) or [`KvPool::abort`]s it.

mod blocks;
mod chunk;
mod kv_type;
mod single;

use std::collections::{HashMap, VecDeque};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use gpt_weights::GptOssConfig;

use crate::batch::Batch;
use crate::error::{EngineError, Result};
use blocks::{BlockGroup, BlockKey};
pub(crate) use chunk::ChunkKv;
use chunk::{GroupView, Writes};
use gpt_kernels::{PagedRow, PagedRows};
pub use kv_type::KvType;
pub use single::KvCache;

/// A sequence in a [`KvPool`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqId(pub u64);

/// The full-attention group.
const FULL: usize = 0;
/// The sliding-window group.
const SLIDING: usize = 1;

/// Sizes of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvPoolConfig {
    /// Positions per block.
    pub block_size: usize,
    /// Blocks of the full-attention group.
    pub full_blocks: usize,
    /// Blocks of the sliding-window group.
    pub sliding_blocks: usize,
    /// Reuse cached prefixes across sequences.
    pub prefix_cache: bool,
    /// Element type of the keys and values.
    pub kv_type: KvType,
}

/// Default positions per block.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

impl KvPoolConfig {
    /// Bytes of one block of the full and of the sliding group (keys and values of `kv_type`).
    pub fn block_bytes(cfg: &GptOssConfig, block_size: usize, kv_type: KvType) -> [u64; 2] {
        let per_layer = (2 * block_size * cfg.n_head_kv * cfg.head_dim * kv_type.bytes()) as u64;
        let sliding = (0..cfg.n_layer).filter(|&il| cfg.is_sliding(il)).count() as u64;
        let full = cfg.n_layer as u64 - sliding;
        [full * per_layer, sliding * per_layer]
    }

    /// A pool of at most `bytes` for `max_seqs` sequences and steps of at most
    /// `max_batch_tokens`: the sliding group gets what its windows can use at once (each
    /// sequence's window plus two partial blocks, and a step's new tokens), never more blocks
    /// than the full group, which gets the rest.
    pub fn from_budget(
        cfg: &GptOssConfig,
        bytes: u64,
        max_seqs: usize,
        max_batch_tokens: usize,
        prefix_cache: bool,
        kv_type: KvType,
    ) -> Result<Self> {
        let bs = DEFAULT_BLOCK_SIZE;
        let [fb, sb] = Self::block_bytes(cfg, bs, kv_type);
        let sliding_need = if sb == 0 {
            0
        } else {
            max_seqs * (cfg.sliding_window.saturating_sub(1).div_ceil(bs) + 2)
                + max_batch_tokens.div_ceil(bs)
        };
        let (full, sliding) = match bytes
            .saturating_sub(sliding_need as u64 * sb)
            .checked_div(fb)
        {
            None => (0, (bytes / sb.max(1)) as usize),
            Some(full) if full as usize >= sliding_need => (full as usize, sliding_need),
            Some(_) => {
                let n = (bytes / (fb + sb)) as usize;
                (n, if sb == 0 { 0 } else { n })
            }
        };
        let c = Self {
            block_size: bs,
            full_blocks: full,
            sliding_blocks: sliding,
            prefix_cache,
            kv_type,
        };
        if c.capacity_tokens() < 2 * bs {
            return Err(EngineError::Other(format!(
                "kv memory: {bytes} bytes hold {} positions; give more (--kv-memory)",
                c.capacity_tokens()
            )));
        }
        Ok(c)
    }

    /// Positions one sequence could hold if it had the pool to itself.
    pub fn capacity_tokens(&self) -> usize {
        let full = if self.full_blocks > 0 {
            self.full_blocks
        } else {
            self.sliding_blocks
        };
        full * self.block_size
    }
}

/// Logical block `first + i` of a sequence is `blocks[i]`; blocks before `first` were given
/// back (sliding group) or never held.
#[derive(Clone, Debug, Default)]
struct Table {
    first: usize,
    blocks: VecDeque<u32>,
}

impl Table {
    /// Logical blocks covered: `first..end()`.
    fn end(&self) -> usize {
        self.first + self.blocks.len()
    }
}

#[derive(Debug)]
struct SeqKv {
    /// Tokens whose keys and values are committed.
    tokens: Vec<u32>,
    tables: [Table; 2],
    /// Hash of each full block of `tokens`.
    hashes: Vec<u64>,
    /// Prompt tokens that came from the prefix cache.
    cached: usize,
}

/// A step begun on the pool: the blocks reserved for its new tokens.
#[derive(Debug)]
pub struct Step {
    chunks: Vec<ChunkKv>,
    allocated: Vec<(SeqId, usize)>,
    tokens: Vec<Vec<u32>>,
    /// Per layer group, where the new rows go (made when a layer first writes).
    writes: [OnceLock<Writes>; 2],
    /// Per layer group, the one-token chunks as paged attention rows (made when first asked).
    decode_rows: [OnceLock<PagedRows>; 2],
    /// Per layer group, every row's position and pool row on the device (made when first
    /// asked).
    #[cfg(feature = "cuda")]
    kv_rows: [OnceLock<gpt_kernels::cuda::rope_kv::KvRows>; 2],
}

impl Step {
    /// The chunks, in batch order.
    pub(crate) fn chunks(&self) -> &[ChunkKv] {
        &self.chunks
    }
}

/// The paged KV memory of one model on one device.
#[derive(Debug)]
pub struct KvPool {
    cfg: KvPoolConfig,
    window: usize,
    groups: [BlockGroup; 2],
    /// Group of each layer.
    layer_group: Vec<usize>,
    /// Whether a group has layers.
    used: [bool; 2],
    /// Keys and values of each layer, `(blocks * bs, hkv, hd)` of `cfg.kv_type`.
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    seqs: HashMap<SeqId, SeqKv>,
    next_id: u64,
    device: Device,
    /// Unique among the pools of this process.
    uid: u64,
}

impl KvPool {
    /// Allocates the pool for `model`'s layers on `device`.
    pub fn new(model: &GptOssConfig, device: &Device, cfg: KvPoolConfig) -> Result<Self> {
        if cfg.block_size == 0 {
            return Err(EngineError::Other("kv pool: block size 0".into()));
        }
        let layer_group: Vec<usize> = (0..model.n_layer)
            .map(|il| if model.is_sliding(il) { SLIDING } else { FULL })
            .collect();
        let used = [layer_group.contains(&FULL), layer_group.contains(&SLIDING)];
        let n = [cfg.full_blocks, cfg.sliding_blocks];
        for g in [FULL, SLIDING] {
            if used[g] && n[g] == 0 {
                return Err(EngineError::Other(
                    "kv pool: a layer group has no blocks".into(),
                ));
            }
        }
        let (hkv, hd) = (model.n_head_kv, model.head_dim);
        let mut k = Vec::with_capacity(model.n_layer);
        let mut v = Vec::with_capacity(model.n_layer);
        for &g in &layer_group {
            let shape = (n[g] * cfg.block_size, hkv, hd);
            k.push(Tensor::zeros(shape, cfg.kv_type.dtype(), device)?);
            v.push(Tensor::zeros(shape, cfg.kv_type.dtype(), device)?);
        }
        Ok(Self {
            cfg,
            window: model.sliding_window.max(1),
            groups: [
                BlockGroup::new(if used[FULL] { n[FULL] } else { 0 }),
                BlockGroup::new(if used[SLIDING] { n[SLIDING] } else { 0 }),
            ],
            layer_group,
            used,
            k,
            v,
            seqs: HashMap::new(),
            next_id: 0,
            device: device.clone(),
            uid: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        })
    }

    /// The pool's sizes.
    pub fn config(&self) -> &KvPoolConfig {
        &self.cfg
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.cfg.block_size
    }

    /// Free blocks (empty or cached) of the full and the sliding group.
    pub fn free_blocks(&self) -> [usize; 2] {
        [
            self.groups[FULL].free_count(),
            self.groups[SLIDING].free_count(),
        ]
    }

    /// Blocks of the full and the sliding group.
    pub fn capacity_blocks(&self) -> [usize; 2] {
        [
            self.groups[FULL].capacity(),
            self.groups[SLIDING].capacity(),
        ]
    }

    /// Blocks the prefix cache holds (full group, sliding group).
    pub fn cached_blocks(&self) -> [usize; 2] {
        [
            self.groups[FULL].cached_count(),
            self.groups[SLIDING].cached_count(),
        ]
    }

    /// Blocks `seq` holds in the full and the sliding group.
    pub fn held_blocks(&self, seq: SeqId) -> Result<[usize; 2]> {
        let s = self.seq(seq)?;
        Ok([s.tables[FULL].blocks.len(), s.tables[SLIDING].blocks.len()])
    }

    /// Sequences in the pool.
    pub fn sequences(&self) -> usize {
        self.seqs.len()
    }

    fn seq(&self, id: SeqId) -> Result<&SeqKv> {
        self.seqs.get(&id).ok_or(EngineError::UnknownSequence(id.0))
    }

    /// The first logical block of the sliding group a query at `pos` still needs.
    fn sliding_first(&self, pos: usize) -> usize {
        (pos + 1).saturating_sub(self.window) / self.cfg.block_size
    }

    /// A new sequence that will start with `prompt`. With the prefix cache on, the longest
    /// cached run of full blocks that starts `prompt` (leaving at least one token to compute)
    /// is taken; [`Self::len`] says how many tokens that was.
    pub fn add_sequence(&mut self, prompt: &[u32]) -> SeqId {
        let id = SeqId(self.next_id);
        self.next_id += 1;
        let mut s = SeqKv {
            tokens: Vec::new(),
            tables: Default::default(),
            hashes: Vec::new(),
            cached: 0,
        };
        if self.cfg.prefix_cache {
            self.take_prefix(&mut s, prompt);
        }
        self.seqs.insert(id, s);
        id
    }

    fn take_prefix(&mut self, s: &mut SeqKv, prompt: &[u32]) {
        let bs = self.cfg.block_size;
        let max_k = prompt.len().saturating_sub(1) / bs;
        let mut keys = Vec::new();
        let mut parent = 0u64;
        for j in 0..max_k {
            let key = BlockKey::new(parent, &prompt[j * bs..(j + 1) * bs]);
            if self.used[FULL] && self.groups[FULL].lookup(&key).is_none() {
                break;
            }
            parent = key.hash;
            keys.push(key);
        }
        // The largest cut whose sliding blocks (those of the window before it) are cached.
        let mut k = keys.len();
        while k > 0 && self.used[SLIDING] {
            let first = self.sliding_first(k * bs);
            if (first..k).all(|j| self.groups[SLIDING].lookup(&keys[j]).is_some()) {
                break;
            }
            k -= 1;
        }
        for (g, first) in [(FULL, 0), (SLIDING, self.sliding_first(k * bs))] {
            if !self.used[g] {
                continue;
            }
            let t = &mut s.tables[g];
            t.first = first.min(k);
            for key in &keys[t.first..k] {
                if let Some(b) = self.groups[g].lookup(key) {
                    self.groups[g].acquire(b);
                    t.blocks.push_back(b);
                }
            }
        }
        s.tokens = prompt[..k * bs].to_vec();
        s.hashes = keys[..k].iter().map(|key| key.hash).collect();
        s.cached = k * bs;
    }

    /// Gives back every block of `seq`; its full blocks stay cached.
    pub fn remove_sequence(&mut self, seq: SeqId) -> Result<()> {
        let s = self
            .seqs
            .remove(&seq)
            .ok_or(EngineError::UnknownSequence(seq.0))?;
        for (g, t) in s.tables.iter().enumerate() {
            for &b in &t.blocks {
                self.groups[g].release(b);
            }
        }
        Ok(())
    }

    /// Positions of `seq` whose keys and values are held.
    pub fn len(&self, seq: SeqId) -> Result<usize> {
        Ok(self.seq(seq)?.tokens.len())
    }

    /// Whether the pool holds no sequence.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// The tokens of `seq` whose keys and values are held.
    pub fn tokens(&self, seq: SeqId) -> Result<&[u32]> {
        Ok(&self.seq(seq)?.tokens)
    }

    /// Prompt tokens of `seq` taken from the prefix cache.
    pub fn cached_tokens(&self, seq: SeqId) -> Result<usize> {
        Ok(self.seq(seq)?.cached)
    }

    /// New blocks (full group, sliding group) that appending `t` tokens to `seq` takes.
    pub fn blocks_to_append(&self, seq: SeqId, t: usize) -> Result<[usize; 2]> {
        let s = self.seq(seq)?;
        let end = (s.tokens.len() + t).div_ceil(self.cfg.block_size);
        Ok([FULL, SLIDING].map(|g| {
            if self.used[g] {
                end.saturating_sub(s.tables[g].end())
            } else {
                0
            }
        }))
    }

    /// Whether appending `t[i]` tokens to each `seq[i]` fits in the free blocks.
    pub fn can_append(&self, appends: &[(SeqId, usize)]) -> Result<bool> {
        let mut need = [0usize; 2];
        for &(seq, t) in appends {
            let n = self.blocks_to_append(seq, t)?;
            need[0] += n[0];
            need[1] += n[1];
        }
        let free = self.free_blocks();
        Ok(need[0] <= free[0] && need[1] <= free[1])
    }

    /// Reserves the blocks of `batch`'s new tokens. On error nothing has changed.
    pub fn begin(&mut self, batch: &Batch) -> Result<Step> {
        let appends: Vec<(SeqId, usize)> = batch
            .chunks()
            .iter()
            .map(|c| (c.seq, c.tokens.len()))
            .collect();
        if !self.can_append(&appends)? {
            let mut need = [0usize; 2];
            for &(seq, t) in &appends {
                let n = self.blocks_to_append(seq, t)?;
                need = [need[0] + n[0], need[1] + n[1]];
            }
            return Err(EngineError::OutOfKvBlocks {
                needed: need,
                free: self.free_blocks(),
            });
        }
        let bs = self.cfg.block_size;
        let mut step = Step {
            chunks: Vec::with_capacity(appends.len()),
            allocated: Vec::new(),
            tokens: batch.chunks().iter().map(|c| c.tokens.clone()).collect(),
            writes: Default::default(),
            decode_rows: Default::default(),
            #[cfg(feature = "cuda")]
            kv_rows: Default::default(),
        };
        for &(seq, t) in &appends {
            let pos = self.len(seq)?;
            let end = (pos + t).div_ceil(bs);
            let mut groups: [Option<GroupView>; 2] = [None, None];
            for g in [FULL, SLIDING] {
                if !self.used[g] {
                    continue;
                }
                let Some(s) = self.seqs.get_mut(&seq) else {
                    return Err(EngineError::UnknownSequence(seq.0));
                };
                let table = &mut s.tables[g];
                if table.blocks.is_empty() {
                    table.first = if g == SLIDING {
                        (pos + 1).saturating_sub(self.window) / bs
                    } else {
                        0
                    };
                }
                while table.end() < end {
                    // Cannot fail: `can_append` counted these blocks.
                    let b = self.groups[g].alloc().ok_or(EngineError::OutOfKvBlocks {
                        needed: [0, 0],
                        free: [0, 0],
                    })?;
                    table.blocks.push_back(b);
                    step.allocated.push((seq, g));
                }
                let blocks: Vec<u32> = table.blocks.iter().copied().collect();
                groups[g] = Some(GroupView::new(blocks, table.first, bs, pos, t));
            }
            step.chunks.push(ChunkKv {
                seq,
                pos,
                t,
                groups,
            });
        }
        Ok(step)
    }

    /// Gives back the blocks `step` reserved.
    pub fn abort(&mut self, step: Step) {
        for &(seq, g) in step.allocated.iter().rev() {
            if let Some(b) = self
                .seqs
                .get_mut(&seq)
                .and_then(|s| s.tables[g].blocks.pop_back())
            {
                self.groups[g].release(b);
            }
        }
    }

    /// Counts `step`'s tokens as held, caches the blocks they filled, and gives back the
    /// sliding blocks behind the window.
    pub fn commit(&mut self, step: Step) {
        let bs = self.cfg.block_size;
        for (c, toks) in step.chunks.iter().zip(step.tokens) {
            let first_needed = self.sliding_first(c.pos + c.t);
            let Some(s) = self.seqs.get_mut(&c.seq) else {
                continue;
            };
            s.tokens.extend_from_slice(&toks);
            while s.hashes.len() < s.tokens.len() / bs {
                let j = s.hashes.len();
                let parent = s.hashes.last().copied().unwrap_or(0);
                let key = BlockKey::new(parent, &s.tokens[j * bs..(j + 1) * bs]);
                s.hashes.push(key.hash);
                if self.cfg.prefix_cache {
                    for g in [FULL, SLIDING] {
                        let t = &s.tables[g];
                        if self.used[g] && j >= t.first && j < t.end() {
                            self.groups[g].register(t.blocks[j - t.first], key.clone());
                        }
                    }
                }
            }
            if self.used[SLIDING] {
                let t = &mut s.tables[SLIDING];
                while t.first < first_needed && !t.blocks.is_empty() {
                    if let Some(b) = t.blocks.pop_front() {
                        self.groups[SLIDING].release(b);
                    }
                    t.first += 1;
                }
            }
        }
    }

    fn view<'c>(&self, il: usize, chunk: &'c ChunkKv) -> Result<&'c GroupView> {
        chunk.groups[self.layer_group[il]]
            .as_ref()
            .ok_or_else(|| EngineError::Other("kv pool: layer group not reserved".into()))
    }

    /// Writes the keys and values `k`, `v` `(t, hkv, hd)` of every row of `step` into layer
    /// `il` (converted to the pool's element type).
    pub(crate) fn write(&self, il: usize, step: &Step, k: &Tensor, v: &Tensor) -> Result<()> {
        let w = self.writes(il, step);
        let dt = self.cfg.kv_type.dtype();
        w.write(&self.k[il], &k.to_dtype(dt)?.contiguous()?)?;
        w.write(&self.v[il], &v.to_dtype(dt)?.contiguous()?)
    }

    /// Where `step`'s rows go in layer `il`'s group (made once per step and group).
    fn writes<'s>(&self, il: usize, step: &'s Step) -> &'s Writes {
        let g = self.layer_group[il];
        step.writes[g]
            .get_or_init(|| Writes::new(step.chunks.iter().map(|c| (c.t, c.groups[g].as_ref()))))
    }

    /// The one-token chunks of `step` as paged attention rows of layer `il`'s group (their
    /// positions and block tables, on the device), in batch order; `None` if there are none.
    pub(crate) fn decode_rows<'s>(
        &self,
        il: usize,
        step: &'s Step,
    ) -> Result<Option<&'s PagedRows>> {
        let g = self.layer_group[il];
        if let Some(r) = step.decode_rows[g].get() {
            return Ok(Some(r));
        }
        let mut rows = Vec::new();
        for c in step.chunks.iter().filter(|c| c.t == 1) {
            let view = self.view(il, c)?;
            rows.push(PagedRow {
                pos: c.pos,
                kv_offset: view.offset,
                blocks: view.blocks.clone(),
            });
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let r = PagedRows::new(&rows, self.cfg.block_size, &self.device)?;
        Ok(Some(step.decode_rows[g].get_or_init(|| r)))
    }

    /// Every row of `step`: its position and the pool row its keys and values go to in layer
    /// `il`'s group, on the device (for the fused RoPE and pool write).
    #[cfg(feature = "cuda")]
    pub(crate) fn kv_rows<'s>(
        &self,
        il: usize,
        step: &'s Step,
    ) -> Result<&'s gpt_kernels::cuda::rope_kv::KvRows> {
        let g = self.layer_group[il];
        if let Some(r) = step.kv_rows[g].get() {
            return Ok(r);
        }
        let mut pos = Vec::new();
        for c in &step.chunks {
            self.view(il, c)?; // every chunk writes this group
            pos.extend((c.pos..c.pos + c.t).map(|p| p as u32));
        }
        let dst = self.writes(il, step).dst_rows(pos.len());
        let r = gpt_kernels::cuda::rope_kv::KvRows::new(&pos, &dst, &self.device)?;
        Ok(step.kv_rows[g].get_or_init(|| r))
    }

    /// Keys and values of layer `il` a query of `chunk` may need, f32 `(1, s, hkv, hd)`,
    /// through the chunk's last position, and the absolute position of their first row.
    pub(crate) fn gather(&self, il: usize, chunk: &ChunkKv) -> Result<(Tensor, Tensor, usize)> {
        let view = self.view(il, chunk)?;
        let bs = self.cfg.block_size;
        let s = chunk.pos + chunk.t - view.offset;
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        Ok((
            f32(view.gather(&self.k[il], bs, s, &self.device)?)?,
            f32(view.gather(&self.v[il], bs, s, &self.device)?)?,
            view.offset,
        ))
    }

    /// Layer `il`'s key and value buffers `(blocks * bs, hkv, hd)` of the pool's element type
    /// (for the fused CUDA decode and paged attention).
    pub(crate) fn layer_buffers(&self, il: usize) -> (&Tensor, &Tensor) {
        (&self.k[il], &self.v[il])
    }

    /// `seq`'s block table for layer `il`'s group: its first logical block and the blocks.
    #[cfg(feature = "cuda")]
    pub(crate) fn table(&self, seq: SeqId, il: usize) -> Result<(usize, Vec<u32>)> {
        let t = &self.seq(seq)?.tables[self.layer_group[il]];
        Ok((t.first, t.blocks.iter().copied().collect()))
    }

    /// An id no other pool of this process has (what a device-side copy of a block table is
    /// keyed by).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// Whether layer `il` is in the sliding group.
    #[cfg(feature = "cuda")]
    pub(crate) fn is_sliding_layer(&self, il: usize) -> bool {
        self.layer_group[il] == SLIDING
    }
}

#[cfg(test)]
mod tests;
