//! Decoding and checking a GGUF header: magic, version, counts, metadata, tensor infos, data
//! section start, and the tensor byte ranges against the file length.

use std::collections::HashMap;

use crate::cursor::{Cursor, What};
use crate::tensor::{check_shape, MAX_DIMS};
use crate::{Array, Error, GgmlType, Metadata, Result, TensorInfo, Value, ValueType};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key holding a custom alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// How deep metadata arrays may nest (an array of arrays of u8 has depth 2).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Smallest encoded metadata pair: 8-byte key length, 4-byte type, 1-byte value.
const MIN_KV_BYTES: u64 = 13;
/// Smallest encoded tensor info: name length 8, n_dims 4, type 4, offset 8.
const MIN_TENSOR_INFO_BYTES: u64 = 24;

/// A parsed and checked header.
pub(crate) struct Header {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    pub index: HashMap<String, usize>,
    pub alignment: u64,
    pub data_offset: u64,
}

/// Parses the header of `buf` (the whole file) and checks every tensor range against it.
pub(crate) fn parse(buf: &[u8]) -> Result<Header> {
    let mut cur = Cursor::new(buf);
    let magic = cur.take(4, &|| "magic".into())?;
    if magic != GGUF_MAGIC {
        return Err(Error::BadMagic {
            found: magic.to_vec(),
        });
    }
    let version = cur.u32(&|| "version".into())?;
    check_version(version)?;
    let n_tensors = cur.u64(&|| "tensor count".into())?;
    let n_kv = cur.u64(&|| "metadata kv count".into())?;
    let min = n_tensors
        .saturating_mul(MIN_TENSOR_INFO_BYTES)
        .saturating_add(n_kv.saturating_mul(MIN_KV_BYTES));
    cur.ensure(min, 1, &|| {
        format!("header counts ({n_tensors} tensors, {n_kv} metadata pairs)")
    })?;

    let mut metadata = Metadata::new();
    for i in 0..n_kv {
        let key = cur.str(&|| format!("metadata pair {i} key"))?;
        let what = || format!("metadata key `{key}` value");
        let ty = value_type(&mut cur, &what)?;
        let value = read_value(&mut cur, ty, 0, &what)?;
        metadata.insert(key.to_string(), value)?;
    }
    let alignment = alignment_of(&metadata)?;

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut index = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let info = read_tensor_info(&mut cur, i)?;
        if index.insert(info.name.clone(), tensors.len()).is_some() {
            return Err(Error::DuplicateTensor {
                name: info.name,
                context: String::new(),
            });
        }
        tensors.push(info);
    }

    let data_offset = align_up(cur.pos(), alignment).ok_or_else(|| Error::BadAlignment {
        found: format!("u32 {alignment} overflows the data offset"),
    })?;
    check_ranges(&tensors, alignment, data_offset, buf.len() as u64)?;
    Ok(Header {
        version,
        metadata,
        tensors,
        index,
        alignment,
        data_offset,
    })
}

fn check_version(version: u32) -> Result<()> {
    match version {
        2 | 3 => Ok(()),
        1 => Err(Error::UnsupportedVersion {
            version,
            hint: " (GGUF v1 used 32-bit counts and lengths; convert the file with a current llama.cpp)",
        }),
        v if v & 0xffff == 0 && matches!(v.swap_bytes(), 1..=3) => Err(Error::BigEndian {
            raw: v,
            swapped: v.swap_bytes(),
        }),
        v => Err(Error::UnsupportedVersion { version: v, hint: "" }),
    }
}

/// `x` rounded up to a multiple of `align` (a power of two); `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// The alignment from `general.alignment` (must be a u32 nonzero power of two) or the default.
pub(crate) fn alignment_of(metadata: &Metadata) -> Result<u64> {
    match metadata.get(ALIGNMENT_KEY) {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(Value::U32(a)) if a.is_power_of_two() => Ok(u64::from(*a)),
        Some(v) => Err(Error::BadAlignment {
            found: v.describe(),
        }),
    }
}

fn value_type(cur: &mut Cursor<'_>, what: What<'_>) -> Result<ValueType> {
    let offset = cur.pos();
    let id = cur.u32(what)?;
    ValueType::from_id(id).ok_or_else(|| Error::BadValueType {
        what: what(),
        offset,
        id,
    })
}

fn read_bool(cur: &mut Cursor<'_>, what: What<'_>) -> Result<bool> {
    let offset = cur.pos();
    match cur.take(1, what)?[0] {
        0 => Ok(false),
        1 => Ok(true),
        byte => Err(Error::InvalidBool {
            what: what(),
            offset,
            byte,
        }),
    }
}

fn read_value(cur: &mut Cursor<'_>, ty: ValueType, depth: usize, what: What<'_>) -> Result<Value> {
    macro_rules! scalar {
        ($variant:ident, $t:ty) => {
            Value::$variant(<$t>::from_le_bytes(cur.array(what)?))
        };
    }
    Ok(match ty {
        ValueType::U8 => scalar!(U8, u8),
        ValueType::I8 => scalar!(I8, i8),
        ValueType::U16 => scalar!(U16, u16),
        ValueType::I16 => scalar!(I16, i16),
        ValueType::U32 => scalar!(U32, u32),
        ValueType::I32 => scalar!(I32, i32),
        ValueType::F32 => scalar!(F32, f32),
        ValueType::U64 => scalar!(U64, u64),
        ValueType::I64 => scalar!(I64, i64),
        ValueType::F64 => scalar!(F64, f64),
        ValueType::Bool => Value::Bool(read_bool(cur, what)?),
        ValueType::String => Value::String(cur.str(what)?.to_string()),
        ValueType::Array => Value::Array(read_array(cur, depth + 1, what)?),
    })
}

/// An array at nesting `depth` (1 = top-level array).
fn read_array(cur: &mut Cursor<'_>, depth: usize, what: What<'_>) -> Result<Array> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(Error::NestingTooDeep {
            what: what(),
            offset: cur.pos(),
            limit: MAX_ARRAY_DEPTH,
        });
    }
    let elem = value_type(cur, what)?;
    let n = cur.u64(what)?;
    // The count must fit in what remains before anything is allocated for it.
    cur.ensure(n, elem.min_size() as u64, &|| {
        format!("{} (array[{elem}] of {n} elements)", what())
    })?;
    Ok(match elem {
        ValueType::U8 => Array::U8(cur.le_vec(n, u8::from_le_bytes, what)?),
        ValueType::I8 => Array::I8(cur.le_vec(n, i8::from_le_bytes, what)?),
        ValueType::U16 => Array::U16(cur.le_vec(n, u16::from_le_bytes, what)?),
        ValueType::I16 => Array::I16(cur.le_vec(n, i16::from_le_bytes, what)?),
        ValueType::U32 => Array::U32(cur.le_vec(n, u32::from_le_bytes, what)?),
        ValueType::I32 => Array::I32(cur.le_vec(n, i32::from_le_bytes, what)?),
        ValueType::F32 => Array::F32(cur.le_vec(n, f32::from_le_bytes, what)?),
        ValueType::U64 => Array::U64(cur.le_vec(n, u64::from_le_bytes, what)?),
        ValueType::I64 => Array::I64(cur.le_vec(n, i64::from_le_bytes, what)?),
        ValueType::F64 => Array::F64(cur.le_vec(n, f64::from_le_bytes, what)?),
        ValueType::Bool => Array::Bool(
            (0..n)
                .map(|_| read_bool(cur, what))
                .collect::<Result<_>>()?,
        ),
        ValueType::String => {
            let mut v = Vec::with_capacity(n as usize);
            for _ in 0..n {
                v.push(cur.str(what)?.to_string());
            }
            Array::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(n as usize);
            for _ in 0..n {
                v.push(read_array(cur, depth + 1, what)?);
            }
            Array::Array(v)
        }
    })
}

fn read_tensor_info(cur: &mut Cursor<'_>, i: u64) -> Result<TensorInfo> {
    let name = cur.str(&|| format!("tensor info {i} name"))?;
    let what = || format!("tensor `{name}` info");
    let n_dims = cur.u32(&what)?;
    if n_dims as usize > MAX_DIMS {
        return Err(Error::TooManyDims {
            tensor: name.to_string(),
            n_dims: n_dims.into(),
            max: MAX_DIMS,
        });
    }
    let dims = cur.le_vec(n_dims.into(), u64::from_le_bytes, &what)?;
    let ty = GgmlType::from_id(cur.u32(&what)?);
    let offset = cur.u64(&what)?;
    check_shape(name, &dims, ty)?;
    Ok(TensorInfo {
        name: name.to_string(),
        dims,
        ty,
        offset,
    })
}

/// Checks alignment, bounds and overlap of every tensor's data range.
fn check_ranges(
    tensors: &[TensorInfo],
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<()> {
    let mut ranges = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(Error::MisalignedTensor {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        // Unknown types have no known size: only their start must lie in the file.
        let len = t.n_bytes().unwrap_or(0);
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(len));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(Error::TensorOutOfBounds {
                    tensor: t.name.clone(),
                    start: data_offset.saturating_add(t.offset),
                    end: data_offset.saturating_add(t.offset).saturating_add(len),
                    file_len,
                })
            }
        }
        if t.n_bytes().is_some() {
            ranges.push((t.offset, t.offset + len, t));
        }
    }
    ranges.sort_unstable_by_key(|r| r.0);
    for w in ranges.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.0 < a.1 {
            return Err(Error::TensorOverlap {
                first: a.2.name.clone(),
                first_start: a.0,
                first_end: a.1,
                second: b.2.name.clone(),
                second_start: b.0,
                second_end: b.1,
            });
        }
    }
    Ok(())
}
