//! The tensor spec: for every GPT-OSS tensor its GGUF name, expected dims and allowed types,
//! and [`validate`], which checks a file against it before anything is allocated.

use std::collections::HashSet;
use std::fmt;

use gguf_format::{GgmlType, GgufModel};

use crate::config::GptOssConfig;
use crate::error::{Error, Result};
use crate::names::{self, LayerTensor, TensorName};

/// What a tensor holds, which decides the types it may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A 1-D vector (norm weight, bias, sinks): float types only.
    Vector,
    /// A dense 2-D matrix (attention, embeddings, output): float or ggml block types.
    Dense,
    /// The router matrix: float types only (llama.cpp never quantizes it).
    Router,
    /// Stacked expert matrices: MXFP4 or float types.
    Experts,
}

const FLOATS: &[GgmlType] = &[GgmlType::F32, GgmlType::F16, GgmlType::BF16];
const DENSE: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::IQ4_NL,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];
const EXPERTS: &[GgmlType] = &[
    GgmlType::MXFP4,
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
];

impl Kind {
    /// The types a tensor of this kind may have.
    pub fn allowed(self) -> &'static [GgmlType] {
        match self {
            Kind::Vector | Kind::Router => FLOATS,
            Kind::Dense => DENSE,
            Kind::Experts => EXPERTS,
        }
    }
}

/// One expected tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// Its name.
    pub name: TensorName,
    /// Expected dims in GGUF order (ne0 first).
    pub dims: Vec<u64>,
    /// What it holds.
    pub kind: Kind,
}

/// Every tensor a model with this config must have, with its expected dims (spec §3).
pub fn expected(cfg: &GptOssConfig) -> Vec<TensorSpec> {
    let (d, q, kv) = (cfg.n_embd as u64, cfg.q_dim() as u64, cfg.kv_dim() as u64);
    let (ne, nff) = (cfg.n_expert as u64, cfg.n_ff_exp as u64);
    let vocab = cfg.vocab_size.map(|v| v as u64);
    names::all(cfg.n_layer)
        .into_iter()
        .map(|name| {
            use LayerTensor::*;
            let (dims, kind) = match name {
                // The vocab size is taken from the file when the tokenizer is absent (0 = any).
                TensorName::TokenEmbd | TensorName::Output => {
                    (vec![d, vocab.unwrap_or(0)], Kind::Dense)
                }
                TensorName::OutputNorm => (vec![d], Kind::Vector),
                TensorName::Layer(_, t) => match t {
                    AttnNorm | PostAttentionNorm | AttnOutputBias => (vec![d], Kind::Vector),
                    AttnQ => (vec![d, q], Kind::Dense),
                    AttnK | AttnV => (vec![d, kv], Kind::Dense),
                    AttnQBias => (vec![q], Kind::Vector),
                    AttnKBias | AttnVBias => (vec![kv], Kind::Vector),
                    AttnOutput => (vec![q, d], Kind::Dense),
                    AttnSinks => (vec![cfg.n_head as u64], Kind::Vector),
                    FfnGateInp => (vec![d, ne], Kind::Router),
                    FfnGateInpBias => (vec![ne], Kind::Vector),
                    FfnGateExps | FfnUpExps => (vec![d, nff, ne], Kind::Experts),
                    FfnDownExps => (vec![nff, d, ne], Kind::Experts),
                    FfnGateExpsBias | FfnUpExpsBias => (vec![nff, ne], Kind::Vector),
                    FfnDownExpsBias => (vec![d, ne], Kind::Vector),
                },
            };
            TensorSpec { name, dims, kind }
        })
        .collect()
}

/// One way a file departs from the spec.
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// An expected tensor is absent.
    Missing {
        /// Its name.
        name: String,
    },
    /// A tensor the spec does not know.
    Unexpected {
        /// Its name.
        name: String,
    },
    /// Dims differ from the config's.
    WrongShape {
        /// Its name.
        name: String,
        /// Expected dims (GGUF order; 0 = any).
        expected: Vec<u64>,
        /// Dims in the file.
        found: Vec<u64>,
    },
    /// A type this engine does not run for this tensor.
    UnsupportedType {
        /// Its name.
        name: String,
        /// The file's type.
        found: GgmlType,
        /// Types allowed here.
        allowed: Vec<GgmlType>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { name } => write!(f, "{name}: missing"),
            Problem::Unexpected { name } => write!(f, "{name}: not a GPT-OSS tensor"),
            Problem::WrongShape {
                name,
                expected,
                found,
            } => write!(
                f,
                "{name}: dims {found:?}, expected {expected:?} (GGUF order, ne0 first)"
            ),
            Problem::UnsupportedType {
                name,
                found,
                allowed,
            } => {
                let allowed: Vec<String> = allowed.iter().map(|t| t.to_string()).collect();
                write!(
                    f,
                    "{name}: type {found} not supported here (allowed: {})",
                    allowed.join(", ")
                )
            }
        }
    }
}

/// The outcome of a successful [`validate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Number of tensors checked.
    pub tensors: usize,
    /// Vocabulary size found on `token_embd.weight`.
    pub vocab_size: usize,
}

/// Checks every tensor of `model` against the spec for `cfg`; reports every problem at once
/// in [`Error::Validation`].
pub fn validate(model: &GgufModel, cfg: &GptOssConfig) -> Result<Report> {
    let mut problems = Vec::new();
    let specs = expected(cfg);
    let mut known = HashSet::new();
    let mut vocab = None;
    for spec in &specs {
        let name = spec.name.to_string();
        let Some(info) = model.tensor(&name) else {
            problems.push(Problem::Missing { name: name.clone() });
            known.insert(name);
            continue;
        };
        let shape_ok = info.dims.len() == spec.dims.len()
            && info
                .dims
                .iter()
                .zip(&spec.dims)
                .all(|(&f, &e)| e == 0 || f == e);
        if !shape_ok {
            problems.push(Problem::WrongShape {
                name: name.clone(),
                expected: spec.dims.clone(),
                found: info.dims.clone(),
            });
        } else if spec.name == TensorName::TokenEmbd {
            vocab = Some(info.dims[1]);
        }
        if !spec.kind.allowed().contains(&info.ty) {
            problems.push(Problem::UnsupportedType {
                name: name.clone(),
                found: info.ty,
                allowed: spec.kind.allowed().to_vec(),
            });
        }
        known.insert(name);
    }
    // `output.weight` must agree with the embedding's vocab even when no tokenizer is present.
    if let (Some(v), Some(out)) = (vocab, model.tensor("output.weight")) {
        if out.dims.len() == 2 && out.dims[1] != v {
            problems.push(Problem::WrongShape {
                name: "output.weight".into(),
                expected: vec![cfg.n_embd as u64, v],
                found: out.dims.clone(),
            });
        }
    }
    for info in model.tensors() {
        if !known.contains(&info.name) {
            problems.push(Problem::Unexpected {
                name: info.name.clone(),
            });
        }
    }
    if problems.is_empty() {
        Ok(Report {
            tensors: specs.len(),
            vocab_size: vocab.unwrap_or(0) as usize,
        })
    } else {
        Err(Error::Validation { problems })
    }
}
