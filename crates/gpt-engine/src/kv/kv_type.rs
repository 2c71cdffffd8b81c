//! The element type of the KV pool's keys and values.

use candle_core::{DType, Device};

/// The element type of a pool's keys and values. Every path reads and writes either: the CUDA
/// kernels that touch the pool come in an f32 and an f16 instance, the other paths convert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KvType {
    /// f32: what the CPU keeps by default (the exact reference).
    #[default]
    F32,
    /// f16 (rounded to nearest): half the memory and the bytes an attention step reads; CUDA's
    /// default, as llama.cpp's.
    F16,
}

impl KvType {
    /// The Candle dtype of the pool's buffers.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 => DType::F16,
        }
    }

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        self.dtype().size_in_bytes()
    }

    /// The default on `device`: f16 on CUDA, f32 elsewhere.
    pub fn default_for(device: &Device) -> Self {
        Self::default_for_cuda(device.is_cuda())
    }

    /// The default on CUDA (f16) or elsewhere (f32).
    pub fn default_for_cuda(cuda: bool) -> Self {
        if cuda {
            Self::F16
        } else {
            Self::F32
        }
    }
}
