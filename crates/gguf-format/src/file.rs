//! One GGUF file: its parsed header plus the bytes behind it (an mmap, or an owned buffer), with
//! zero-copy access to tensor data.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::parse::{parse, Header};
use crate::{Error, Metadata, Result, TensorInfo};

enum Storage {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// One parsed and checked GGUF file (v2 or v3, little-endian).
///
/// Opening checks the whole header and every tensor's byte range, so [`GgufFile::tensor_data`]
/// only fails for unknown tensor types or for infos that do not come from this file.
pub struct GgufFile {
    storage: Storage,
    path: Option<PathBuf>,
    header: Header,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.header.version)
            .field("len", &self.storage.bytes().len())
            .field("metadata_pairs", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps `path` and parses and checks its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |op| {
            move |source| Error::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        };
        let file = File::open(path).map_err(io("open"))?;
        // SAFETY: the map is read-only. Like every mmap-based model loader we assume the file is
        // not truncated or rewritten by another process while mapped; if that happens the
        // process may observe changed bytes or get SIGBUS, which no safe API can prevent.
        let map = unsafe { Mmap::map(&file) }.map_err(io("mmap"))?;
        let header = parse(&map)?;
        Ok(Self {
            storage: Storage::Mmap(map),
            path: Some(path.to_path_buf()),
            header,
        })
    }

    /// Parses and checks an in-memory file.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let header = parse(&bytes)?;
        Ok(Self {
            storage: Storage::Owned(bytes),
            path: None,
            header,
        })
    }

    /// The path given to [`GgufFile::open`]; `None` for [`GgufFile::from_bytes`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.header.version
    }

    /// Data alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.header.alignment
    }

    /// Absolute file offset of the data section (end of header rounded up to the alignment).
    pub fn data_offset(&self) -> u64 {
        self.header.data_offset
    }

    /// Total file size in bytes.
    pub fn file_size(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// The whole file.
    pub fn as_bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// Metadata pairs in file order.
    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }

    /// Tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The info of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header
            .index
            .get(name)
            .map(|&i| &self.header.tensors[i])
    }

    /// The bytes of a tensor (zero-copy). `info` should come from this file; any other info is
    /// checked against the file bounds. Unknown types give [`Error::UnknownType`].
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8]> {
        let len = info.n_bytes().ok_or_else(|| Error::UnknownType {
            tensor: info.name.clone(),
            id: info.ty.id(),
        })?;
        let bytes = self.storage.bytes();
        let file_len = bytes.len() as u64;
        let start = self.header.data_offset.checked_add(info.offset);
        match start.and_then(|s| Some((s, s.checked_add(len)?))) {
            Some((s, e)) if e <= file_len => Ok(&bytes[s as usize..e as usize]),
            _ => Err(Error::TensorOutOfBounds {
                tensor: info.name.clone(),
                start: self.header.data_offset.saturating_add(info.offset),
                end: self
                    .header
                    .data_offset
                    .saturating_add(info.offset)
                    .saturating_add(len),
                file_len,
            }),
        }
    }

    /// The bytes of the tensor called `name`.
    pub fn tensor_data_by_name(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensor(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
        })?;
        self.tensor_data(info)
    }
}
