//! Loading a validated GPT-OSS GGUF into Candle tensors on a [`Device`].
//!
//! Tensors are read straight from the mmap one at a time (the largest single allocation is one
//! tensor), so no second copy of the file is ever held in host memory:
//! - MXFP4 experts stay as raw `U8` tensors `(e, n, k/32*17)` for gpt-kernels;
//! - dense matrices are dequantized to f32 `(out, in)`, or kept as Candle `QMatMul`s
//!   ([`DenseMode::Quantized`]) where Candle runs the type;
//! - vectors (norms, biases, sinks, router) become f32 tensors;
//! - the token embedding stays in host memory as raw rows, dequantized per looked-up token.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Tensor};
use gguf_format::{GgmlType, GgufModel, TensorInfo};

use crate::config::GptOssConfig;
use crate::dequant;
use crate::error::{Error, Result};
use crate::names::{LayerTensor, TensorName};
use crate::plan::{qmatmul_supported, DenseMode};

/// A dense weight matrix `W` of logical shape `(out, in)`; `forward` computes `x Wᵀ`.
#[derive(Clone, Debug)]
pub enum Matrix {
    /// f32 `(out, in)`.
    Dense(Tensor),
    /// A Candle quantized matrix.
    Quant(QMatMul),
}

impl Matrix {
    /// `x (.., in) -> (.., out)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Matrix::Dense(w) => x.broadcast_matmul(&w.t()?),
            Matrix::Quant(q) => candle_core::Module::forward(q, x),
        }
    }
}

/// Stacked expert matrices of logical shape `(e, n, k)`.
#[derive(Clone, Debug)]
pub enum Experts {
    /// Raw ggml MXFP4 blocks, `U8 (e, n, k/32*17)`.
    Mxfp4 {
        /// The blocks.
        blocks: Tensor,
        /// The input width `k`.
        k: usize,
    },
    /// f32 `(e, n, k)`.
    Dense(Tensor),
}

/// The token embedding, kept as raw ggml rows in host memory.
#[derive(Clone, Debug)]
pub struct Embedding {
    rows: Arc<Vec<u8>>,
    ty: GgmlType,
    dim: usize,
    vocab: usize,
    row_bytes: usize,
}

impl Embedding {
    /// An embedding from raw rows of `ty` (`vocab` rows of `dim` elements).
    pub(crate) fn from_rows(rows: Arc<Vec<u8>>, ty: GgmlType, dim: usize, vocab: usize) -> Self {
        let row_bytes = rows.len() / vocab.max(1);
        Self {
            rows,
            ty,
            dim,
            vocab,
            row_bytes,
        }
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Looks up `ids`, returning f32 `(ids.len(), dim)` on `device`.
    pub fn lookup(&self, ids: &[u32], device: &Device) -> Result<Tensor> {
        let out = self.lookup_host(ids)?;
        Ok(Tensor::from_vec(out, (ids.len(), self.dim), device)?)
    }

    /// Looks up `ids` into host memory: f32 rows, `ids.len() * dim` values.
    pub fn lookup_host(&self, ids: &[u32]) -> Result<Vec<f32>> {
        use rayon::prelude::*;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(Error::InvalidConfig {
                what: format!("token id {id} out of range (vocab {})", self.vocab),
            });
        }
        let mut out = vec![0f32; ids.len() * self.dim];
        // Rows in parallel: a 2048-token prompt is 2048 rows to dequantize from the mapping.
        out.par_chunks_mut(self.dim.max(1))
            .zip(ids.par_iter())
            .try_for_each(|(dst, &id)| {
                let id = id as usize;
                let row = &self.rows[id * self.row_bytes..(id + 1) * self.row_bytes];
                dequant::dequantize_into(self.ty, row, dst).map_err(|source| Error::Dequant {
                    tensor: "token_embd.weight".into(),
                    source,
                })
            })?;
        Ok(out)
    }
}

/// The tensors of one block. Field names are the GGUF roles.
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub struct LayerWeights {
    pub attn_norm: Tensor,
    pub attn_q: Matrix,
    pub attn_q_b: Tensor,
    pub attn_k: Matrix,
    pub attn_k_b: Tensor,
    pub attn_v: Matrix,
    pub attn_v_b: Tensor,
    pub attn_output: Matrix,
    pub attn_output_b: Tensor,
    pub attn_sinks: Tensor,
    pub post_attention_norm: Tensor,
    pub ffn_gate_inp: Tensor,
    pub ffn_gate_inp_b: Tensor,
    pub ffn_gate_exps: Experts,
    pub ffn_gate_exps_b: Tensor,
    pub ffn_up_exps: Experts,
    pub ffn_up_exps_b: Tensor,
    pub ffn_down_exps: Experts,
    pub ffn_down_exps_b: Tensor,
}

/// Every tensor of a GPT-OSS model, on one device.
#[derive(Clone, Debug)]
pub struct Weights {
    /// The config the weights were checked against.
    pub config: GptOssConfig,
    /// `token_embd.weight` (host rows).
    pub token_embd: Embedding,
    /// The blocks.
    pub layers: Vec<LayerWeights>,
    /// `output_norm.weight`, f32 `(d)`.
    pub output_norm: Tensor,
    /// `output.weight`, `(vocab, d)`.
    pub output: Matrix,
}

/// How to load.
pub struct LoadOptions<'a> {
    /// How dense matrices are held.
    pub dense: DenseMode,
    /// Called after each tensor with `(bytes done, bytes total)` of the file's tensor data.
    pub progress: Option<&'a mut dyn FnMut(u64, u64)>,
    /// The MoE blocks of the first this many layers are loaded into host memory (on
    /// [`Device::Cpu`]) whatever the device ([`crate::plan::host_moe_tensor`]).
    pub host_moe_layers: usize,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        Self {
            dense: DenseMode::F32,
            progress: None,
            host_moe_layers: 0,
        }
    }
}

struct Loader<'m, 'p> {
    model: &'m GgufModel,
    device: &'m Device,
    host_moe_layers: usize,
    dense: DenseMode,
    done: u64,
    total: u64,
    progress: Option<&'p mut dyn FnMut(u64, u64)>,
}

/// The dense types the CUDA fast form holds exactly as one int8 plane with a scale per 32-block
/// ([`crate::dequant::split_int8`]'s types that the loader keeps quantized: Candle has no
/// IQ4_NL). Every other dense type is held there as 15-bit block integers in two int8 planes,
/// within half a step of `amax / 16256` per 32-block: the precision the fast kernels give their
/// inputs.
pub const INT8_SPLIT_TYPES: [GgmlType; 3] = [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q5_0];

/// Candle's quantized type for the ggml type `ty`, where Candle has one.
pub fn to_candle_qtype(ty: GgmlType) -> Option<GgmlDType> {
    use GgmlType::*;
    Some(match ty {
        F32 => GgmlDType::F32,
        F16 => GgmlDType::F16,
        Q4_0 => GgmlDType::Q4_0,
        Q4_1 => GgmlDType::Q4_1,
        Q5_0 => GgmlDType::Q5_0,
        Q5_1 => GgmlDType::Q5_1,
        Q8_0 => GgmlDType::Q8_0,
        Q2_K => GgmlDType::Q2K,
        Q3_K => GgmlDType::Q3K,
        Q4_K => GgmlDType::Q4K,
        Q5_K => GgmlDType::Q5K,
        Q6_K => GgmlDType::Q6K,
        _ => return None,
    })
}

impl<'m> Loader<'m, '_> {
    /// Where `name` goes: the load's device, or the host for a host MoE tensor.
    fn device_for(&self, name: &TensorName) -> &'m Device {
        if crate::plan::host_moe_tensor(name, self.host_moe_layers) {
            &Device::Cpu
        } else {
            self.device
        }
    }

    fn info(&self, name: &TensorName) -> Result<(String, &'m TensorInfo, &'m [u8])> {
        let s = name.to_string();
        let info = self.model.tensor(&s).ok_or_else(|| Error::Validation {
            problems: vec![crate::spec::Problem::Missing { name: s.clone() }],
        })?;
        let bytes = self.model.tensor_data(&s)?;
        Ok((s, info, bytes))
    }

    fn tick(&mut self, bytes: usize) {
        self.done += bytes as u64;
        if let Some(p) = self.progress.as_mut() {
            p(self.done, self.total);
        }
    }

    fn f32_vec(&self, name: &str, info: &TensorInfo, bytes: &[u8]) -> Result<Vec<f32>> {
        dequant::dequantize_f32(info.ty, bytes, info.n_elements() as usize).map_err(|source| {
            Error::Dequant {
                tensor: name.to_string(),
                source,
            }
        })
    }

    /// Any tensor as f32 in its logical shape.
    fn float(&mut self, name: TensorName) -> Result<Tensor> {
        let (s, info, bytes) = self.info(&name)?;
        let v = self.f32_vec(&s, info, bytes)?;
        let t = Tensor::from_vec(v, info.logical_shape(), self.device_for(&name))?;
        self.tick(bytes.len());
        Ok(t)
    }

    fn matrix(&mut self, name: TensorName) -> Result<Matrix> {
        let (_, info, bytes) = self.info(&name)?;
        if self.dense == DenseMode::Quantized
            && info.ty.is_quantized()
            && qmatmul_supported(info.ty)
        {
            if let Some(qt) = to_candle_qtype(info.ty) {
                let storage =
                    QStorage::from_data(Cow::Borrowed(bytes), self.device_for(&name), qt)?;
                let q = QTensor::new(storage, info.logical_shape())?;
                let m = QMatMul::from_arc(Arc::new(q))?;
                self.tick(bytes.len());
                return Ok(Matrix::Quant(m));
            }
        }
        Ok(Matrix::Dense(self.float(name)?))
    }

    fn experts(&mut self, name: TensorName) -> Result<Experts> {
        let (_, info, bytes) = self.info(&name)?;
        if info.ty == GgmlType::MXFP4 {
            let (k, n, e) = (
                info.dims[0] as usize,
                info.dims[1] as usize,
                info.dims[2] as usize,
            );
            // (e, n, k/32*17): one row of k/32 blocks per output unit.
            let dev = self.device_for(&name);
            let blocks = Tensor::from_raw_buffer(bytes, DType::U8, &[e, n, k / 32 * 17], dev)?;
            self.tick(bytes.len());
            return Ok(Experts::Mxfp4 { blocks, k });
        }
        Ok(Experts::Dense(self.float(name)?))
    }

    fn embedding(&mut self) -> Result<Embedding> {
        let (_, info, bytes) = self.info(&TensorName::TokenEmbd)?;
        let (dim, vocab) = (info.dims[0] as usize, info.dims[1] as usize);
        if !dequant::is_supported(info.ty) || vocab == 0 {
            return Err(Error::Unsupported {
                what: format!(
                    "token_embd.weight of type {} and dims {:?}",
                    info.ty, info.dims
                ),
            });
        }
        let row_bytes = bytes.len() / vocab;
        let e = Embedding {
            rows: Arc::new(bytes.to_vec()),
            ty: info.ty,
            dim,
            vocab,
            row_bytes,
        };
        self.tick(bytes.len());
        Ok(e)
    }

    fn layer(&mut self, il: usize) -> Result<LayerWeights> {
        use LayerTensor::*;
        let n = |t| TensorName::Layer(il, t);
        Ok(LayerWeights {
            attn_norm: self.float(n(AttnNorm))?,
            attn_q: self.matrix(n(AttnQ))?,
            attn_q_b: self.float(n(AttnQBias))?,
            attn_k: self.matrix(n(AttnK))?,
            attn_k_b: self.float(n(AttnKBias))?,
            attn_v: self.matrix(n(AttnV))?,
            attn_v_b: self.float(n(AttnVBias))?,
            attn_output: self.matrix(n(AttnOutput))?,
            attn_output_b: self.float(n(AttnOutputBias))?,
            attn_sinks: self.float(n(AttnSinks))?,
            post_attention_norm: self.float(n(PostAttentionNorm))?,
            ffn_gate_inp: self.float(n(FfnGateInp))?,
            ffn_gate_inp_b: self.float(n(FfnGateInpBias))?,
            ffn_gate_exps: self.experts(n(FfnGateExps))?,
            ffn_gate_exps_b: self.float(n(FfnGateExpsBias))?,
            ffn_up_exps: self.experts(n(FfnUpExps))?,
            ffn_up_exps_b: self.float(n(FfnUpExpsBias))?,
            ffn_down_exps: self.experts(n(FfnDownExps))?,
            ffn_down_exps_b: self.float(n(FfnDownExpsBias))?,
        })
    }
}

impl Weights {
    /// Validates `model` against `config` ([`crate::spec::validate`]), then loads every tensor
    /// onto `device`.
    pub fn load(
        model: &GgufModel,
        config: &GptOssConfig,
        device: &Device,
        opts: LoadOptions<'_>,
    ) -> Result<Self> {
        crate::spec::validate(model, config)?;
        Self::load_validated(model, config, device, opts)
    }

    /// [`Weights::load`] of a model already checked with [`crate::spec::validate`] (a loader
    /// that validates first, to report problems before planning memory, validates once).
    pub fn load_validated(
        model: &GgufModel,
        config: &GptOssConfig,
        device: &Device,
        opts: LoadOptions<'_>,
    ) -> Result<Self> {
        let total = model.tensors().filter_map(|t| t.n_bytes()).sum();
        let mut l = Loader {
            model,
            device,
            host_moe_layers: opts.host_moe_layers,
            dense: opts.dense,
            done: 0,
            total,
            progress: opts.progress,
        };
        let _span = tracing::info_span!("load", layers = config.n_layer).entered();
        let token_embd = l.embedding()?;
        let layers = (0..config.n_layer)
            .map(|il| l.layer(il))
            .collect::<Result<Vec<_>>>()?;
        let output_norm = l.float(TensorName::OutputNorm)?;
        let output = l.matrix(TensorName::Output)?;
        Ok(Weights {
            config: config.clone(),
            token_embd,
            layers,
            output_norm,
            output,
        })
    }
}
