//! Writing one model as a split set (`name-00001-of-00003.gguf`), the layout of gguf-py's
//! `GGUFWriter(split_max_tensors=…, split_max_size=…)` and llama.cpp's `gguf-split`: the first
//! shard holds every metadata pair, then `split.no` (u16), `split.count` (u16) and
//! `split.tensors.count` (i32); the others hold only those three keys (and the alignment, when
//! one is set, so each shard reads back on its own); tensors keep their order, each shard
//! taking as many as the [`SplitPolicy`] allows (at least one).
//!
//! ```
//! use gguf_format::{GgmlType, GgufModel, GgufWriter, SplitPolicy, Value};
//! let mut w = GgufWriter::new();
//! w.add_kv("general.architecture", Value::String("gpt-oss".into())).unwrap();
//! for i in 0..3 {
//!     w.add_tensor(format!("t{i}"), &[4], GgmlType::F32, vec![i as u8; 16]).unwrap();
//! }
//! let dir = std::env::temp_dir().join(format!("gguf-split-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let policy = SplitPolicy { max_tensors: Some(2), max_bytes: None };
//! let paths = w.write_split(dir.join("m.gguf"), policy, |_, _, _| Ok(())).unwrap();
//! assert_eq!(paths[1].file_name().unwrap(), "m-00002-of-00002.gguf");
//! let model = GgufModel::open(&paths[0]).unwrap();
//! assert_eq!(model.tensor_count(), 3);
//! assert_eq!(model.tensor_data("t2").unwrap(), &[2u8; 16]);
//! # std::fs::remove_dir_all(&dir).ok();
//! ```

use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::model::{split_path, SPLIT_COUNT_KEY, SPLIT_NO_KEY, SPLIT_TENSORS_COUNT_KEY};
use crate::parse::ALIGNMENT_KEY;
use crate::{Error, GgufWriter, Result, TensorInfo, Value};

/// How many tensors a shard may take: a new shard starts when the next tensor would pass
/// either bound (unpadded tensor bytes, as gguf-py and `gguf-split` count them). A shard always
/// takes at least one tensor, so a tensor larger than `max_bytes` gets a shard of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitPolicy {
    /// At most this many tensors per shard.
    pub max_tensors: Option<usize>,
    /// At most this many tensor bytes per shard.
    pub max_bytes: Option<u64>,
}

impl SplitPolicy {
    /// The tensor index ranges of each shard for tensors of `sizes` bytes, in order.
    pub fn shards(&self, sizes: &[u64]) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let (mut start, mut bytes) = (0, 0u64);
        for (i, &n) in sizes.iter().enumerate() {
            let full_count = self.max_tensors.is_some_and(|m| i - start >= m.max(1));
            let full_bytes = self.max_bytes.is_some_and(|m| bytes.saturating_add(n) > m);
            if i > start && (full_count || full_bytes) {
                out.push(start..i);
                (start, bytes) = (i, 0);
            }
            bytes = bytes.saturating_add(n);
        }
        if start < sizes.len() || out.is_empty() {
            out.push(start..sizes.len());
        }
        out
    }
}

fn split_err(path: &Path, reason: String) -> Error {
    Error::Split {
        path: path.to_path_buf(),
        reason,
    }
}

impl GgufWriter {
    /// Writes the model as shards next to `path` (`dir/name.gguf` gives
    /// `dir/name-00001-of-0000N.gguf`, …) split by `policy`, and returns their paths. When
    /// everything fits one shard, writes `path` itself, with no split keys (as gguf-py does).
    /// `fill` is [`GgufWriter::write_to`]'s, called with the tensor's index in this writer.
    pub fn write_split(
        &self,
        path: impl AsRef<Path>,
        policy: SplitPolicy,
        mut fill: impl FnMut(usize, &TensorInfo, &mut dyn Write) -> std::io::Result<()>,
    ) -> Result<Vec<PathBuf>> {
        let path = path.as_ref();
        let sizes: Vec<u64> = self
            .tensors
            .iter()
            .map(|(t, _)| t.n_bytes().unwrap_or(0))
            .collect();
        let ranges = policy.shards(&sizes);
        if ranges.len() == 1 {
            self.write_file(path, fill)?;
            return Ok(vec![path.to_path_buf()]);
        }
        let count = u16::try_from(ranges.len())
            .map_err(|_| split_err(path, format!("{} shards: more than 65535", ranges.len())))?;
        let n_tensors = i32::try_from(self.tensors.len()).map_err(|_| {
            split_err(
                path,
                format!("{} tensors: more than i32", self.tensors.len()),
            )
        })?;
        let prefix = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| split_err(path, "no file name to number the shards after".into()))?;
        let mut paths = Vec::with_capacity(ranges.len());
        for (no, range) in ranges.into_iter().enumerate() {
            let mut shard = GgufWriter::new();
            if no == 0 {
                for (k, v) in self.metadata.iter() {
                    shard.add_kv(k, v.clone())?;
                }
            } else if let Some(a) = self.metadata.get(ALIGNMENT_KEY) {
                shard.add_kv(ALIGNMENT_KEY, a.clone())?;
            }
            shard.add_kv(SPLIT_NO_KEY, Value::U16(no as u16))?;
            shard.add_kv(SPLIT_COUNT_KEY, Value::U16(count))?;
            shard.add_kv(SPLIT_TENSORS_COUNT_KEY, Value::I32(n_tensors))?;
            for (info, _) in &self.tensors[range.clone()] {
                shard.add_tensor_info(info.name.clone(), &info.dims, info.ty)?;
            }
            let p = split_path(path, prefix, no as u32 + 1, count as u32);
            shard.write_file(&p, |i, info, out| {
                let global = range.start + i;
                match &self.tensors[global].1 {
                    Some(data) => out.write_all(data),
                    None => fill(global, info, out),
                }
            })?;
            paths.push(p);
        }
        Ok(paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_follow_both_bounds_and_take_at_least_one_tensor() {
        let p = |t, b| SplitPolicy {
            max_tensors: t,
            max_bytes: b,
        };
        assert_eq!(p(None, None).shards(&[1, 2, 3]), vec![0..3]);
        assert_eq!(p(Some(2), None).shards(&[1; 5]), vec![0..2, 2..4, 4..5]);
        assert_eq!(
            p(None, Some(10)).shards(&[4, 4, 4, 20, 1]),
            vec![0..2, 2..3, 3..4, 4..5]
        );
        assert_eq!(p(Some(1), Some(100)).shards(&[50, 50]), vec![0..1, 1..2]);
        assert_eq!(p(Some(0), None).shards(&[1, 1]), vec![0..1, 1..2]);
        assert_eq!(p(Some(2), None).shards(&[]), vec![0..0]);
    }
}
