//! [`GptOssConfig`]: the hyperparameters of a GPT-OSS model, read from GGUF metadata.
//!
//! Keys are llama.cpp's `gpt-oss.*` keys (spec §2.1). Optional keys get llama.cpp's defaults:
//! sliding-window pattern 2 (even layers slide), YaRN beta 32 / 1, attention factor 1,
//! rope dims = `attention.key_length`, `rope.freq_base_swa` = `rope.freq_base`.

use gguf_format::{Array, Metadata, Value};

use crate::error::{Error, Result};

/// The architecture string GPT-OSS GGUFs carry in `general.architecture`.
pub const ARCH: &str = "gpt-oss";

/// How RoPE frequencies are scaled.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// YaRN (GPT-OSS uses factor 32, original context 4096, beta 32 / 1).
    Yarn {
        /// Context extension factor (`rope.scaling.factor`).
        factor: f32,
        /// Training context before extension (`rope.scaling.original_context_length`).
        original_context: u32,
        /// High-frequency correction bound (`rope.scaling.yarn_beta_fast`, default 32).
        beta_fast: f32,
        /// Low-frequency correction bound (`rope.scaling.yarn_beta_slow`, default 1).
        beta_slow: f32,
        /// Extra multiplier on the YaRN magnitude scale (`rope.scaling.attn_factor`, default 1).
        attn_factor: f32,
    },
}

/// GPT-OSS hyperparameters (spec §1, §2).
#[derive(Clone, Debug, PartialEq)]
pub struct GptOssConfig {
    /// Number of transformer blocks (`block_count`).
    pub n_layer: usize,
    /// Training context length (`context_length`).
    pub n_ctx_train: usize,
    /// Hidden size (`embedding_length`).
    pub n_embd: usize,
    /// Query heads (`attention.head_count`).
    pub n_head: usize,
    /// Key/value heads (`attention.head_count_kv`).
    pub n_head_kv: usize,
    /// Per-head key width (`attention.key_length`); GPT-OSS: 64, not `n_embd / n_head`.
    pub head_dim: usize,
    /// Per-head value width (`attention.value_length`).
    pub head_dim_v: usize,
    /// Rotated dims per head (`rope.dimension_count`, default `head_dim`).
    pub n_rot: usize,
    /// RMSNorm epsilon (`attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// Experts per MoE layer (`expert_count`).
    pub n_expert: usize,
    /// Experts used per token (`expert_used_count`).
    pub n_expert_used: usize,
    /// Expert hidden width (`expert_feed_forward_length`).
    pub n_ff_exp: usize,
    /// Sliding window in tokens, the current one included (`attention.sliding_window`).
    pub sliding_window: usize,
    /// Which layers slide (from `attention.sliding_window_pattern`, default period 2).
    pub sliding_layers: Vec<bool>,
    /// RoPE base (`rope.freq_base`).
    pub rope_freq_base: f32,
    /// RoPE base on sliding layers (`rope.freq_base_swa`, default `rope_freq_base`).
    pub rope_freq_base_swa: f32,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// Vocabulary size (the length of `tokenizer.ggml.tokens` when present).
    pub vocab_size: Option<usize>,
}

fn key(name: &str) -> String {
    format!("{ARCH}.{name}")
}

fn req_usize(md: &Metadata, name: &str) -> Result<usize> {
    Ok(md.get_u32(&key(name))? as usize)
}

fn opt_f32(md: &Metadata, name: &str) -> Result<Option<f32>> {
    Ok(md.get_opt_f32(&key(name))?)
}

impl GptOssConfig {
    /// Reads the config from GGUF metadata; every missing required key or wrong type is an
    /// error naming the key.
    pub fn from_metadata(md: &Metadata) -> Result<Self> {
        let arch = md.get_str("general.architecture")?;
        if arch != ARCH {
            return Err(Error::WrongArchitecture {
                found: arch.to_string(),
            });
        }
        let n_layer = req_usize(md, "block_count")?;
        let head_dim = req_usize(md, "attention.key_length")?;
        let n_rot = match md.get_opt_u32(&key("rope.dimension_count"))? {
            Some(v) => v as usize,
            None => head_dim,
        };
        let sliding_layers = sliding_pattern(md, n_layer)?;
        let rope_freq_base = md.get_f32(&key("rope.freq_base"))?;
        let rope_scaling = match md.get_opt_str(&key("rope.scaling.type"))? {
            None | Some("none") => RopeScaling::None,
            Some("yarn") => RopeScaling::Yarn {
                factor: md.get_f32(&key("rope.scaling.factor"))?,
                original_context: md.get_u32(&key("rope.scaling.original_context_length"))?,
                beta_fast: opt_f32(md, "rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
                beta_slow: opt_f32(md, "rope.scaling.yarn_beta_slow")?.unwrap_or(1.0),
                attn_factor: opt_f32(md, "rope.scaling.attn_factor")?.unwrap_or(1.0),
            },
            Some(other) => {
                return Err(Error::Unsupported {
                    what: format!("{}: rope scaling type {other:?}", key("rope.scaling.type")),
                })
            }
        };
        let vocab_size = match md.get("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => Some(a.len()),
            _ => None,
        };
        let cfg = GptOssConfig {
            n_layer,
            n_ctx_train: req_usize(md, "context_length")?,
            n_embd: req_usize(md, "embedding_length")?,
            n_head: req_usize(md, "attention.head_count")?,
            n_head_kv: req_usize(md, "attention.head_count_kv")?,
            head_dim,
            head_dim_v: req_usize(md, "attention.value_length")?,
            n_rot,
            rms_eps: md.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            n_expert: req_usize(md, "expert_count")?,
            n_expert_used: req_usize(md, "expert_used_count")?,
            n_ff_exp: req_usize(md, "expert_feed_forward_length")?,
            sliding_window: req_usize(md, "attention.sliding_window")?,
            sliding_layers,
            rope_freq_base,
            rope_freq_base_swa: opt_f32(md, "rope.freq_base_swa")?.unwrap_or(rope_freq_base),
            rope_scaling,
            vocab_size,
        };
        cfg.check()?;
        Ok(cfg)
    }

    /// Sanity checks between fields (all sizes nonzero, GQA divides, top-k ≤ experts, ...).
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidConfig { what });
        for (name, v) in [
            ("block_count", self.n_layer),
            ("embedding_length", self.n_embd),
            ("attention.head_count", self.n_head),
            ("attention.head_count_kv", self.n_head_kv),
            ("attention.key_length", self.head_dim),
            ("expert_count", self.n_expert),
            ("expert_used_count", self.n_expert_used),
            ("expert_feed_forward_length", self.n_ff_exp),
            ("attention.sliding_window", self.sliding_window),
        ] {
            if v == 0 {
                return bad(format!("{} must be > 0", key(name)));
            }
        }
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return bad(format!(
                "head_count {} is not a multiple of head_count_kv {}",
                self.n_head, self.n_head_kv
            ));
        }
        if self.n_expert_used > self.n_expert {
            return bad(format!(
                "expert_used_count {} > expert_count {}",
                self.n_expert_used, self.n_expert
            ));
        }
        if self.head_dim_v != self.head_dim {
            return bad(format!(
                "value_length {} != key_length {} is not supported",
                self.head_dim_v, self.head_dim
            ));
        }
        if self.n_rot != self.head_dim {
            return bad(format!(
                "rope.dimension_count {} != key_length {} is not supported",
                self.n_rot, self.head_dim
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("key_length {} must be even", self.head_dim));
        }
        if self.n_embd > 1 << 20 || self.n_layer > 1 << 12 || self.n_expert > 1 << 16 {
            return bad("implausibly large dimensions".into());
        }
        Ok(())
    }

    /// Query width `n_head * head_dim` (4096 for 20B).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Key/value width `n_head_kv * head_dim` (512 for 20B).
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Whether layer `il` uses the sliding window.
    pub fn is_sliding(&self, il: usize) -> bool {
        self.sliding_layers.get(il).copied().unwrap_or(false)
    }
}

/// llama.cpp's `set_swa_pattern(n)`: layer `il` slides iff `il % n < n - 1`; an array of bools
/// gives each layer directly.
fn sliding_pattern(md: &Metadata, n_layer: usize) -> Result<Vec<bool>> {
    let k = key("attention.sliding_window_pattern");
    match md.get(&k) {
        None => Ok((0..n_layer).map(|il| il % 2 == 0).collect()),
        Some(Value::Array(Array::Bool(v))) if v.len() == n_layer => Ok(v.clone()),
        Some(Value::Array(a)) => Err(Error::InvalidConfig {
            what: format!("{k}: array of {} items for {n_layer} layers", a.len()),
        }),
        Some(_) => {
            let n = md.get_u32(&k)? as usize;
            if n == 0 {
                return Err(Error::InvalidConfig {
                    what: format!("{k} must be > 0"),
                });
            }
            Ok((0..n_layer).map(|il| il % n < n - 1).collect())
        }
    }
}
