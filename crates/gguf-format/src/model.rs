//! A model that is one GGUF file or a split set (`name-00001-of-00003.gguf`, the naming of
//! llama.cpp's `gguf-split` and gguf-py's `SHARD_NAME_FORMAT`) opened as one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{Error, GgufFile, Metadata, Result, TensorInfo};

/// `split.no`: 0-based shard index (u16 in files written by gguf-py / llama.cpp).
pub const SPLIT_NO_KEY: &str = "split.no";
/// `split.count`: number of shards.
pub const SPLIT_COUNT_KEY: &str = "split.count";
/// `split.tensors.count`: tensors over all shards.
pub const SPLIT_TENSORS_COUNT_KEY: &str = "split.tensors.count";

/// One or more GGUF files holding one model.
#[derive(Debug)]
pub struct GgufModel {
    shards: Vec<GgufFile>,
    /// Tensor name -> (shard, index in shard).
    index: HashMap<String, (usize, usize)>,
}

/// `(prefix, number, count)` if the file name is `{prefix}-{NNNNN}-of-{NNNNN}.gguf`.
pub fn parse_split_name(path: &Path) -> Option<(String, u32, u32)> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(no) || !digits(count) || prefix.is_empty() {
        return None;
    }
    Some((prefix.to_string(), no.parse().ok()?, count.parse().ok()?))
}

/// The path of shard `no` (1-based) of `count` next to `path`.
pub fn split_path(path: &Path, prefix: &str, no: u32, count: u32) -> PathBuf {
    path.with_file_name(format!("{prefix}-{no:05}-of-{count:05}.gguf"))
}

fn split_err(path: &Path, reason: String) -> Error {
    Error::Split {
        path: path.to_path_buf(),
        reason,
    }
}

impl GgufModel {
    /// Opens `path`; a name matching `*-NNNNN-of-NNNNN.gguf` opens every shard of the set
    /// (whichever shard was named), checking that all exist, their `split.no`/`split.count`
    /// metadata where present, and that tensor names are unique across shards.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let Some((prefix, no, count)) = parse_split_name(path) else {
            let file = GgufFile::open(path)?;
            if let Some(n) = file.metadata().get_opt_u32(SPLIT_COUNT_KEY)? {
                if n > 1 {
                    return Err(split_err(
                        path,
                        format!("file says it is one of {n} shards ({SPLIT_COUNT_KEY}) but its name does not follow `name-00001-of-{n:05}.gguf`"),
                    ));
                }
            }
            return Self::from_shards(vec![file]);
        };
        if count == 0 || no == 0 || no > count {
            return Err(split_err(
                path,
                format!("shard number {no} of {count} in the file name is invalid"),
            ));
        }
        let mut shards = Vec::with_capacity(count as usize);
        for i in 1..=count {
            let p = split_path(path, &prefix, i, count);
            if !p.is_file() {
                return Err(split_err(&p, format!("shard {i} of {count} is missing")));
            }
            let file = GgufFile::open(&p)?;
            let meta = file.metadata();
            if let Some(n) = meta.get_opt_u32(SPLIT_COUNT_KEY)? {
                if n != count {
                    return Err(split_err(
                        &p,
                        format!("{SPLIT_COUNT_KEY} is {n}, the file name says {count}"),
                    ));
                }
            }
            if let Some(n) = meta.get_opt_u32(SPLIT_NO_KEY)? {
                if n != i - 1 {
                    return Err(split_err(
                        &p,
                        format!(
                            "{SPLIT_NO_KEY} is {n}, expected {} (0-based) from the file name",
                            i - 1
                        ),
                    ));
                }
            }
            shards.push(file);
        }
        let model = Self::from_shards(shards)?;
        let first = &model.shards[0];
        if let Some(n) = first.metadata().get_opt_u64(SPLIT_TENSORS_COUNT_KEY)? {
            if n != model.tensor_count() as u64 {
                return Err(split_err(
                    first.path().unwrap_or(path),
                    format!(
                        "{SPLIT_TENSORS_COUNT_KEY} is {n} but the shards hold {} tensors",
                        model.tensor_count()
                    ),
                ));
            }
        }
        Ok(model)
    }

    /// A model from already-opened files (first = the one whose metadata is used); tensor names
    /// must be unique across them.
    pub fn from_shards(shards: Vec<GgufFile>) -> Result<Self> {
        if shards.is_empty() {
            return Err(split_err(Path::new(""), "no shards given".into()));
        }
        let total = shards.iter().map(|s| s.tensors().len()).sum();
        let mut index = HashMap::with_capacity(total);
        for (s, file) in shards.iter().enumerate() {
            for (i, t) in file.tensors().iter().enumerate() {
                if let Some((prev, _)) = index.insert(t.name.clone(), (s, i)) {
                    return Err(Error::DuplicateTensor {
                        name: t.name.clone(),
                        context: format!(" (in shards {} and {})", prev + 1, s + 1),
                    });
                }
            }
        }
        Ok(Self { shards, index })
    }

    /// The first shard's metadata.
    pub fn metadata(&self) -> &Metadata {
        self.shards[0].metadata()
    }

    /// All tensor infos, shard by shard, in file order. Offsets are relative to their own
    /// shard's data section.
    pub fn tensors(&self) -> impl Iterator<Item = &TensorInfo> {
        self.shards.iter().flat_map(|s| s.tensors().iter())
    }

    /// The info of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let &(s, i) = self.index.get(name)?;
        Some(&self.shards[s].tensors()[i])
    }

    /// Which shard (0-based) holds the tensor called `name`.
    pub fn shard_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).map(|&(s, _)| s)
    }

    /// Number of tensors over all shards.
    pub fn tensor_count(&self) -> usize {
        self.index.len()
    }

    /// The bytes of the tensor called `name` (zero-copy).
    pub fn tensor_data(&self, name: &str) -> Result<&[u8]> {
        let &(s, i) = self.index.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })?;
        let shard = &self.shards[s];
        shard.tensor_data(&shard.tensors()[i])
    }

    /// The files, in shard order.
    pub fn shards(&self) -> &[GgufFile] {
        &self.shards
    }

    /// The first shard's GGUF version.
    pub fn version(&self) -> u32 {
        self.shards[0].version()
    }

    /// The first shard's alignment.
    pub fn alignment(&self) -> u64 {
        self.shards[0].alignment()
    }

    /// Total size of all shards in bytes.
    pub fn file_size(&self) -> u64 {
        self.shards.iter().map(GgufFile::file_size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_names() {
        let p = Path::new("/m/gpt-oss-120b-mxfp4-00002-of-00003.gguf");
        assert_eq!(
            parse_split_name(p),
            Some(("gpt-oss-120b-mxfp4".to_string(), 2, 3))
        );
        assert_eq!(
            split_path(p, "gpt-oss-120b-mxfp4", 1, 3),
            Path::new("/m/gpt-oss-120b-mxfp4-00001-of-00003.gguf")
        );
        assert_eq!(parse_split_name(Path::new("a-1-of-3.gguf")), None);
        assert_eq!(parse_split_name(Path::new("model.gguf")), None);
        assert_eq!(parse_split_name(Path::new("-00001-of-00003.gguf")), None);
    }
}
