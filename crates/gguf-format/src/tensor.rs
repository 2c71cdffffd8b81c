//! Tensor infos: name, dims (GGUF order), ggml type and data offset, with the shape checks
//! shared by the reader and the writer.

use crate::{Error, GgmlType, Result};

/// ggml's `GGML_MAX_DIMS`: a tensor has at most this many dimensions.
pub const MAX_DIMS: usize = 4;

/// One tensor's entry in the tensor-info table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name (`"blk.0.attn_q.weight"`).
    pub name: String,
    /// Dimensions in GGUF/ggml order: `dims[0]` = ne0, the contiguous one.
    pub dims: Vec<u64>,
    /// Element type.
    pub ty: GgmlType,
    /// Byte offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (product of dims; 1 for zero dims). Saturates at `u64::MAX` for
    /// unchecked infos (infos from a parsed file or a writer never overflow).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Bytes of data; `None` for unknown types (or if ne0 is not a whole number of blocks).
    pub fn n_bytes(&self) -> Option<u64> {
        self.ty.bytes_for(self.n_elements())
    }

    /// Row-major ("logical", C order) shape: the dims reversed, `[ne2, ne1, ne0]`.
    pub fn logical_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// Checks dims count, zero dims, element-count overflow and block divisibility; returns the
    /// byte size (`None` for unknown types, which are allowed).
    pub fn check_shape(&self) -> Result<Option<u64>> {
        check_shape(&self.name, &self.dims, self.ty)
    }
}

/// The shape checks of [`TensorInfo::check_shape`], on parts.
pub(crate) fn check_shape(name: &str, dims: &[u64], ty: GgmlType) -> Result<Option<u64>> {
    if dims.len() > MAX_DIMS {
        return Err(Error::TooManyDims {
            tensor: name.to_string(),
            n_dims: dims.len() as u64,
            max: MAX_DIMS,
        });
    }
    if dims.contains(&0) {
        return Err(Error::ZeroDim {
            tensor: name.to_string(),
            dims: dims.to_vec(),
        });
    }
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| Error::ElementCountOverflow {
            tensor: name.to_string(),
            dims: dims.to_vec(),
        })?;
    let Some((blck, _)) = ty.block_layout() else {
        return Ok(None);
    };
    let ne0 = dims.first().copied().unwrap_or(1);
    if ne0 % blck != 0 {
        return Err(Error::NotWholeBlocks {
            tensor: name.to_string(),
            ne0,
            ty,
            block_size: blck,
        });
    }
    ty.bytes_for(n)
        .map(Some)
        .ok_or_else(|| Error::ElementCountOverflow {
            tensor: name.to_string(),
            dims: dims.to_vec(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dims: &[u64], ty: GgmlType) -> TensorInfo {
        TensorInfo {
            name: "t".into(),
            dims: dims.to_vec(),
            ty,
            offset: 0,
        }
    }

    #[test]
    fn sizes_and_shapes() {
        let t = info(&[2880, 2880, 32], GgmlType::MXFP4);
        assert_eq!(t.n_elements(), 2880 * 2880 * 32);
        assert_eq!(t.n_bytes(), Some(90 * 17 * 2880 * 32));
        assert_eq!(t.logical_shape(), vec![32, 2880, 2880]);
        assert_eq!(t.check_shape().unwrap(), t.n_bytes());
        assert_eq!(info(&[], GgmlType::F32).n_elements(), 1);
        assert_eq!(
            info(&[32], GgmlType::Unknown(77)).check_shape().unwrap(),
            None
        );
    }

    #[test]
    fn shape_errors() {
        let e = info(&[1, 1, 1, 1, 1], GgmlType::F32)
            .check_shape()
            .unwrap_err();
        assert!(e.to_string().contains("5 dimensions, at most 4"), "{e}");
        let e = info(&[4, 0], GgmlType::F32).check_shape().unwrap_err();
        assert!(e.to_string().contains("zero-length dimension"), "{e}");
        let e = info(&[1 << 32, 1 << 32], GgmlType::F32)
            .check_shape()
            .unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
        let e = info(&[2880, 4], GgmlType::Q4_K).check_shape().unwrap_err();
        assert!(
            e.to_string()
                .contains("ne0 = 2880 is not a multiple of the Q4_K block size 256"),
            "{e}"
        );
    }
}
