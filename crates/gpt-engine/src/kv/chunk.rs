//! Where one chunk of a step writes its keys and values and reads what its queries see: per
//! layer group, the chunk's runs of physically consecutive rows and the blocks to gather,
//! uploaded to the device only when a layer first asks. A step's writes ([`Writes`]) join its
//! chunks' runs: one copy each, or one scatter when there are many.

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

use super::SeqId;
use crate::error::Result;

/// Most copies a write issues before it scatters instead.
const MAX_RUNS: usize = 8;

/// A run of `len` new rows: from row `src` of the chunk to pool row `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    pub src: usize,
    pub dst: usize,
    pub len: usize,
}

/// One layer group's view of a chunk.
#[derive(Debug)]
pub(super) struct GroupView {
    /// Held blocks, from logical block `first`.
    pub blocks: Vec<u32>,
    /// Absolute position of the first gathered row.
    pub offset: usize,
    /// Where the new rows go.
    pub runs: Vec<Run>,
    /// `blocks` on the device.
    ids: OnceLock<Tensor>,
}

impl GroupView {
    /// The view of new positions `pos..pos + t` over `blocks` (logical block `first` on).
    pub(super) fn new(blocks: Vec<u32>, first: usize, bs: usize, pos: usize, t: usize) -> Self {
        let mut runs: Vec<Run> = Vec::new();
        for p in pos..pos + t {
            let b = blocks
                .get((p / bs).wrapping_sub(first))
                .copied()
                .unwrap_or(u32::MAX);
            let dst = b as usize * bs + p % bs;
            match runs.last_mut() {
                Some(r) if r.dst + r.len == dst => r.len += 1,
                _ => runs.push(Run {
                    src: p - pos,
                    dst,
                    len: 1,
                }),
            }
        }
        Self {
            blocks,
            offset: first * bs,
            runs,
            ids: OnceLock::new(),
        }
    }

    /// Rows `offset..offset + s` of `buf (blocks * bs, hkv, hd)` as `(1, s, hkv, hd)`.
    pub(super) fn gather(&self, buf: &Tensor, bs: usize, s: usize, dev: &Device) -> Result<Tensor> {
        let (n, hkv, hd) = buf.dims3()?;
        let ids = match self.ids.get() {
            Some(i) => i,
            None => {
                let i = Tensor::from_vec(self.blocks.clone(), self.blocks.len(), dev)?;
                self.ids.get_or_init(|| i)
            }
        };
        debug_assert_eq!(ids.dtype(), DType::U32);
        let rows = buf
            .reshape((n / bs, bs * hkv * hd))? // (blocks, bs * hkv * hd)
            .index_select(ids, 0)?; // (held, bs * hkv * hd)
        let held = rows.dim(0)?;
        Ok(rows
            .reshape((held * bs, hkv, hd))?
            .narrow(0, 0, s)?
            .reshape((1, s, hkv, hd))?) // (1, s, hkv, hd)
    }
}

/// Where the new rows of a step go in one layer group: its chunks' runs, with the chunks' rows
/// numbered through the whole batch.
#[derive(Debug)]
pub(super) struct Writes {
    runs: Vec<Run>,
    /// Pool row of every element of the new rows, `(t, width)` u32 (for a scatter).
    scatter: OnceLock<Tensor>,
}

impl Writes {
    /// The writes of chunks whose views are `views`, in batch order (`None`: a chunk of `t`
    /// rows that writes nothing in this group).
    pub(super) fn new<'a>(views: impl IntoIterator<Item = (usize, Option<&'a GroupView>)>) -> Self {
        let mut runs: Vec<Run> = Vec::new();
        let mut at = 0;
        for (t, view) in views {
            for r in view.map(|v| v.runs.as_slice()).unwrap_or(&[]) {
                let r = Run {
                    src: at + r.src,
                    ..*r
                };
                match runs.last_mut() {
                    Some(l) if l.src + l.len == r.src && l.dst + l.len == r.dst => l.len += r.len,
                    _ => runs.push(r),
                }
            }
            at += t;
        }
        Self {
            runs,
            scatter: OnceLock::new(),
        }
    }

    /// The pool row of each of the step's `t` rows (0 for a row this group does not write).
    pub(super) fn dst_rows(&self, t: usize) -> Vec<u32> {
        let mut rows = vec![0u32; t];
        for r in &self.runs {
            for i in 0..r.len {
                rows[r.src + i] = (r.dst + i) as u32;
            }
        }
        rows
    }

    /// Writes `x (t, hkv, hd)` into `buf (blocks * bs, hkv, hd)`.
    pub(super) fn write(&self, buf: &Tensor, x: &Tensor) -> Result<()> {
        if self.runs.len() <= MAX_RUNS {
            for r in &self.runs {
                buf.slice_set(&x.narrow(0, r.src, r.len)?, 0, r.dst)?;
            }
            return Ok(());
        }
        let (t, hkv, hd) = x.dims3()?;
        let width = hkv * hd;
        let idx = match self.scatter.get() {
            Some(i) => i,
            None => {
                let rows: Vec<u32> = self
                    .dst_rows(t)
                    .into_iter()
                    .flat_map(|r| std::iter::repeat_n(r, width))
                    .collect();
                let i = Tensor::from_vec(rows, (t, width), buf.device())?;
                self.scatter.get_or_init(|| i)
            }
        };
        let n = buf.dim(0)?;
        buf.reshape((n, width))? // a view of the pool's storage
            .scatter_set(idx, &x.reshape((t, width))?, 0)?;
        Ok(())
    }
}

/// Where one chunk of a step reads and writes.
#[derive(Debug)]
pub(crate) struct ChunkKv {
    /// The sequence.
    pub seq: SeqId,
    /// Position of the chunk's first token.
    pub pos: usize,
    /// Tokens of the chunk.
    pub t: usize,
    /// Per layer group.
    pub(super) groups: [Option<GroupView>; 2],
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step's writes number the chunks' rows through the batch and join runs that continue
    /// each other; a chunk without a view in the group only shifts the rows after it.
    #[test]
    fn a_steps_writes_join_its_chunks() {
        let a = GroupView::new(vec![3], 0, 4, 0, 2); // rows 12, 13
        let b = GroupView::new(vec![3], 0, 4, 2, 1); // row 14: continues a
        let c = GroupView::new(vec![7], 0, 4, 1, 2); // rows 29, 30
        let w = Writes::new([(2, Some(&a)), (1, Some(&b)), (5, None), (2, Some(&c))]);
        assert_eq!(
            w.runs,
            vec![
                Run {
                    src: 0,
                    dst: 12,
                    len: 3
                },
                Run {
                    src: 8,
                    dst: 29,
                    len: 2
                }
            ]
        );
    }

    #[test]
    fn consecutive_blocks_make_one_run() {
        let v = GroupView::new(vec![3, 4, 9], 1, 4, 5, 7); // positions 5..12 over blocks 1..4
        assert_eq!(
            v.runs,
            vec![
                Run {
                    src: 0,
                    dst: 13,
                    len: 7
                } // blocks 3 and 4 are adjacent: rows 13..20
            ]
        );
        let w = GroupView::new(vec![3, 4, 9], 1, 4, 5, 8);
        assert_eq!(w.runs.len(), 2, "{:?}", w.runs);
        assert_eq!(
            w.runs[1],
            Run {
                src: 7,
                dst: 36,
                len: 1
            }
        );
    }

    /// Scattered blocks (more than `MAX_RUNS` runs) take the scatter path: the same rows.
    #[test]
    fn a_scatter_writes_what_copies_write() {
        let dev = Device::Cpu;
        let blocks: Vec<u32> = (0..12).map(|i| (i * 7) % 12).collect(); // no two adjacent
        let v = GroupView::new(blocks.clone(), 0, 2, 1, 20);
        assert!(v.runs.len() > MAX_RUNS);
        let x = Tensor::randn(0f32, 1., (20, 2, 3), &dev).unwrap();
        let scattered = Tensor::zeros((24, 2, 3), DType::F32, &dev).unwrap();
        Writes::new([(20, Some(&v))]).write(&scattered, &x).unwrap();
        let copied = Tensor::zeros((24, 2, 3), DType::F32, &dev).unwrap();
        for r in &v.runs {
            copied
                .slice_set(&x.narrow(0, r.src, r.len).unwrap(), 0, r.dst)
                .unwrap();
        }
        let a: Vec<f32> = scattered.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = copied.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a, b);
        assert!(a.iter().any(|&z| z != 0.0));
    }
}
