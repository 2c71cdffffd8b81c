//! Writing GGUF v3 files with gguf-py's `GGUFWriter` layout: header, metadata pairs, tensor
//! infos, zero padding to the alignment, then each tensor's bytes padded to the alignment.
//! Tensor data can be given up front or streamed at write time (for multi-GB files).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::parse::{align_up, alignment_of, ALIGNMENT_KEY, GGUF_MAGIC};
use crate::tensor::check_shape;
use crate::{Array, Error, GgmlType, Metadata, Result, TensorInfo, Value};

/// Builds a GGUF file in memory (metadata and tensor infos) and writes it out.
#[derive(Debug, Default)]
pub struct GgufWriter {
    pub(crate) metadata: Metadata,
    /// Infos (offsets filled in by `layout`) and data given up front, if any.
    pub(crate) tensors: Vec<(TensorInfo, Option<Vec<u8>>)>,
    names: HashSet<String>,
}

/// Counts bytes going through to the inner writer.
struct Counting<'w, W: Write> {
    inner: &'w mut W,
    written: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Counting<'_, W> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let offset = self.written;
        self.write_all(bytes)
            .map_err(|source| Error::Write { offset, source })
    }

    fn pad_to(&mut self, alignment: u64) -> Result<()> {
        let target = align_up(self.written, alignment).unwrap_or(self.written);
        let zeros = [0u8; 256];
        while self.written < target {
            let n = (target - self.written).min(zeros.len() as u64) as usize;
            self.put(&zeros[..n])?;
        }
        Ok(())
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Appends a value's bytes (without its type id).
fn put_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => out.push(*x),
        Value::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(u8::from(*x)),
        Value::String(s) => put_str(out, s),
        Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => put_array(out, a),
    }
}

/// Appends element type, count and elements.
fn put_array(out: &mut Vec<u8>, a: &Array) {
    out.extend_from_slice(&a.elem_type().id().to_le_bytes());
    out.extend_from_slice(&(a.len() as u64).to_le_bytes());
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => out.extend_from_slice(v),
        Array::I8(v) => le!(v),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => v.iter().for_each(|s| put_str(out, s)),
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
        Array::Array(v) => v.iter().for_each(|inner| put_array(out, inner)),
    }
}

impl GgufWriter {
    /// An empty GGUF v3 writer with the default alignment (32).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the data alignment. Like gguf-py's `add_custom_alignment`, this stores it as the
    /// `general.alignment` u32 pair (replacing an earlier value in place, else appended). The
    /// value is checked (nonzero power of two) when writing.
    pub fn set_alignment(&mut self, alignment: u32) {
        self.metadata
            .upsert(ALIGNMENT_KEY.to_string(), Value::U32(alignment));
    }

    /// The alignment that will be used (from `general.alignment`, default 32).
    pub fn alignment(&self) -> Result<u64> {
        alignment_of(&self.metadata)
    }

    /// Adds a metadata pair; a key already present is an error.
    pub fn add_kv(&mut self, key: impl Into<String>, value: Value) -> Result<()> {
        self.metadata.insert(key.into(), value)
    }

    /// The metadata added so far, in order.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    fn push_info(&mut self, name: String, dims: &[u64], ty: GgmlType) -> Result<TensorInfo> {
        if self.names.contains(&name) {
            return Err(Error::DuplicateTensor {
                name,
                context: " (added twice to the writer)".into(),
            });
        }
        let n_bytes = check_shape(&name, dims, ty)?;
        if n_bytes.is_none() {
            return Err(Error::UnknownType {
                tensor: name,
                id: ty.id(),
            });
        }
        self.names.insert(name.clone());
        Ok(TensorInfo {
            name,
            dims: dims.to_vec(),
            ty,
            offset: 0,
        })
    }

    /// Adds a tensor with its data; `dims` in GGUF order (ne0 first). `data.len()` must equal the
    /// tensor's byte size.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
        data: Vec<u8>,
    ) -> Result<()> {
        let name = name.into();
        let expected = check_shape(&name, dims, ty)?.unwrap_or(0);
        if data.len() as u64 != expected {
            return Err(Error::TensorSize {
                tensor: name,
                what: "data has",
                expected,
                found: data.len() as u64,
                ty,
                dims: dims.to_vec(),
            });
        }
        let info = self.push_info(name, dims, ty)?;
        self.tensors.push((info, Some(data)));
        Ok(())
    }

    /// Adds a tensor whose data the `fill` callback of [`GgufWriter::write_to`] supplies.
    pub fn add_tensor_info(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<()> {
        let info = self.push_info(name.into(), dims, ty)?;
        self.tensors.push((info, None));
        Ok(())
    }

    /// Number of tensors added.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// The tensor infos with the offsets they will have (relative to the data section).
    pub fn layout(&self) -> Result<Vec<TensorInfo>> {
        let alignment = self.alignment()?;
        let mut offset = 0u64;
        let mut out = Vec::with_capacity(self.tensors.len());
        for (info, _) in &self.tensors {
            let n = info.n_bytes().unwrap_or(0);
            out.push(TensorInfo {
                offset,
                ..info.clone()
            });
            offset = offset
                .checked_add(n)
                .and_then(|e| align_up(e, alignment))
                .ok_or_else(|| Error::ElementCountOverflow {
                    tensor: info.name.clone(),
                    dims: info.dims.clone(),
                })?;
        }
        Ok(out)
    }

    /// Size of the data section (every tensor padded to the alignment).
    pub fn data_size(&self) -> Result<u64> {
        let alignment = self.alignment()?;
        let layout = self.layout()?;
        Ok(layout.last().map_or(0, |t| {
            align_up(t.offset + t.n_bytes().unwrap_or(0), alignment).unwrap_or(u64::MAX)
        }))
    }

    /// The header bytes: magic, version, counts, metadata, tensor infos (no padding).
    pub fn header_bytes(&self) -> Result<Vec<u8>> {
        let layout = self.layout()?;
        let mut out = Vec::new();
        out.extend_from_slice(&GGUF_MAGIC);
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(layout.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in self.metadata.iter() {
            put_str(&mut out, key);
            out.extend_from_slice(&value.value_type().id().to_le_bytes());
            put_value(&mut out, value);
        }
        for t in &layout {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.id().to_le_bytes());
            out.extend_from_slice(&t.offset.to_le_bytes());
        }
        Ok(out)
    }

    /// Writes the header and the padding up to the data section; returns the data section's
    /// absolute offset. Tensor data (each padded to the alignment) must follow at
    /// `data offset + layout()[i].offset`.
    pub fn write_header<W: Write>(&self, mut w: W) -> Result<u64> {
        let alignment = self.alignment()?;
        let mut out = Counting {
            inner: &mut w,
            written: 0,
        };
        out.put(&self.header_bytes()?)?;
        out.pad_to(alignment)?;
        Ok(out.written)
    }

    /// Writes the whole file to `w`. `fill(i, info, out)` is called for each tensor added with
    /// [`GgufWriter::add_tensor_info`] (`i` = tensor index) and must write exactly
    /// `info.n_bytes()` bytes.
    pub fn write_to<W: Write>(
        &self,
        mut w: W,
        mut fill: impl FnMut(usize, &TensorInfo, &mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let alignment = self.alignment()?;
        let layout = self.layout()?;
        let mut out = Counting {
            inner: &mut w,
            written: 0,
        };
        out.put(&self.header_bytes()?)?;
        out.pad_to(alignment)?;
        for (i, ((_, data), info)) in self.tensors.iter().zip(&layout).enumerate() {
            let expected = info.n_bytes().unwrap_or(0);
            match data {
                Some(d) => out.put(d)?,
                None => {
                    let start = out.written;
                    fill(i, info, &mut out).map_err(|source| Error::Write {
                        offset: start,
                        source,
                    })?;
                    let found = out.written - start;
                    if found != expected {
                        return Err(Error::TensorSize {
                            tensor: info.name.clone(),
                            what: "fill wrote",
                            expected,
                            found,
                            ty: info.ty,
                            dims: info.dims.clone(),
                        });
                    }
                }
            }
            out.pad_to(alignment)?;
        }
        let offset = out.written;
        out.flush()
            .map_err(|source| Error::Write { offset, source })
    }

    /// [`GgufWriter::write_to`] into a new file at `path` (buffered).
    pub fn write_file(
        &self,
        path: impl AsRef<Path>,
        fill: impl FnMut(usize, &TensorInfo, &mut dyn Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let path = path.as_ref();
        let io = |op| {
            move |source| Error::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        };
        let file = File::create(path).map_err(io("create"))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        self.write_to(&mut w, fill).map_err(|e| match e {
            Error::Write { source, .. } => io("write")(source),
            other => other,
        })?;
        w.into_inner().map_err(|e| io("write")(e.into_error()))?;
        Ok(())
    }
}
