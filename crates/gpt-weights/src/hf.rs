//! Loading the original Hugging Face checkpoint (`config.json` + `*.safetensors`) into the same
//! [`Weights`] as a GGUF (spec §3, §4.2).
//!
//! - MXFP4 experts (`*_blocks` u8 `[E, N, G, 16]` with interleaved nibbles, `*_scales` u8
//!   `[E, N, G]`) are repacked to ggml MXFP4 rows; the fused `gate_up_proj_*` is split by row
//!   parity (row 2j = gate j, row 2j+1 = up j), never by halves.
//! - Dequantized checkpoints (`gate_up_proj` f32/bf16 `[E, d, 2·ff]`, interleaved on the last
//!   dim; `down_proj` `[E, ff, d]`) load as float experts.
//! - Dense tensors may be F32, F16 or BF16.
//!
//! This module is the one place that knows HF names; everything after it uses the GGUF roles.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use gguf_format::GgmlType;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;

use crate::config::{GptOssConfig, RopeScaling};
use crate::dequant::mxfp4::repack_hf_to_ggml;
use crate::error::{Error, Result};
use crate::load::{Embedding, Experts, LayerWeights, Matrix, Weights};

fn bad(what: String) -> Error {
    Error::InvalidConfig { what }
}

fn cfg_usize(j: &Json, key: &str) -> Result<usize> {
    j.get(key)
        .and_then(Json::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| bad(format!("config.json: missing or non-integer {key:?}")))
}

fn cfg_f32(j: &Json, key: &str) -> Result<f32> {
    j.get(key)
        .and_then(Json::as_f64)
        .map(|v| v as f32)
        .ok_or_else(|| bad(format!("config.json: missing or non-numeric {key:?}")))
}

/// The config of an HF `config.json` (transformers' `GptOssConfig` names).
pub fn config_from_json(j: &Json) -> Result<GptOssConfig> {
    let n_layer = cfg_usize(j, "num_hidden_layers")?;
    let sliding_layers = match j.get("layer_types").and_then(Json::as_array) {
        Some(v) if v.len() == n_layer => v
            .iter()
            .map(|t| t.as_str() == Some("sliding_attention"))
            .collect(),
        Some(v) => {
            return Err(bad(format!(
                "config.json: {} layer_types for {n_layer} layers",
                v.len()
            )))
        }
        None => (0..n_layer).map(|il| il % 2 == 0).collect(),
    };
    let rope_scaling = match j.get("rope_scaling") {
        Some(rs) if rs.get("rope_type").and_then(Json::as_str) == Some("yarn") => {
            RopeScaling::Yarn {
                factor: cfg_f32(rs, "factor")?,
                original_context: cfg_usize(rs, "original_max_position_embeddings")? as u32,
                beta_fast: cfg_f32(rs, "beta_fast").unwrap_or(32.0),
                beta_slow: cfg_f32(rs, "beta_slow").unwrap_or(1.0),
                attn_factor: 1.0,
            }
        }
        _ => RopeScaling::None,
    };
    let head_dim = cfg_usize(j, "head_dim")?;
    let base = cfg_f32(j, "rope_theta")?;
    let cfg = GptOssConfig {
        n_layer,
        n_ctx_train: cfg_usize(j, "max_position_embeddings")?,
        n_embd: cfg_usize(j, "hidden_size")?,
        n_head: cfg_usize(j, "num_attention_heads")?,
        n_head_kv: cfg_usize(j, "num_key_value_heads")?,
        head_dim,
        head_dim_v: head_dim,
        n_rot: head_dim,
        rms_eps: cfg_f32(j, "rms_norm_eps")?,
        n_expert: cfg_usize(j, "num_local_experts")?,
        n_expert_used: cfg_usize(j, "num_experts_per_tok")?,
        n_ff_exp: cfg_usize(j, "intermediate_size")?,
        sliding_window: cfg_usize(j, "sliding_window")?,
        sliding_layers,
        rope_freq_base: base,
        rope_freq_base_swa: base,
        rope_scaling,
        vocab_size: Some(cfg_usize(j, "vocab_size")?),
    };
    cfg.check()?;
    Ok(cfg)
}

/// The safetensors files of a checkpoint, mapped.
struct Files {
    maps: Vec<memmap2::Mmap>,
}

impl Files {
    fn open(dir: &Path) -> Result<Self> {
        let io = |context: String| move |source| Error::Io { context, source };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io(format!("reading {}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(bad(format!("no *.safetensors in {}", dir.display())));
        }
        let mut maps = Vec::new();
        for p in paths {
            let f = std::fs::File::open(&p).map_err(io(format!("opening {}", p.display())))?;
            // SAFETY: the file is only read; as with every mmap, it must not be truncated while mapped.
            let m = unsafe { memmap2::Mmap::map(&f) }
                .map_err(io(format!("mapping {}", p.display())))?;
            maps.push(m);
        }
        Ok(Self { maps })
    }

    fn parsed(&self) -> Result<Vec<SafeTensors<'_>>> {
        self.maps
            .iter()
            .map(|m| SafeTensors::deserialize(m).map_err(|e| bad(format!("safetensors: {e}"))))
            .collect()
    }
}

struct Reader<'a> {
    files: Vec<SafeTensors<'a>>,
    device: &'a Device,
}

fn to_f32(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => {
            return Err(bad(format!(
                "{name}: dtype {other:?} where a float tensor was expected"
            )))
        }
    })
}

impl Reader<'_> {
    fn view(&self, name: &str) -> Result<safetensors::tensor::TensorView<'_>> {
        self.files
            .iter()
            .find_map(|f| f.tensor(name).ok())
            .ok_or_else(|| Error::Validation {
                problems: vec![crate::spec::Problem::Missing { name: name.into() }],
            })
    }

    fn has(&self, name: &str) -> bool {
        self.files.iter().any(|f| f.tensor(name).is_ok())
    }

    fn check(&self, name: &str, shape: &[usize], want: &[usize]) -> Result<()> {
        if shape != want {
            return Err(bad(format!("{name}: shape {shape:?}, expected {want:?}")));
        }
        Ok(())
    }

    /// A float tensor as f32 of shape `want`.
    fn float(&self, name: &str, want: &[usize]) -> Result<Tensor> {
        let v = self.view(name)?;
        self.check(name, v.shape(), want)?;
        Ok(Tensor::from_vec(
            to_f32(name, v.dtype(), v.data())?,
            want,
            self.device,
        )?)
    }

    fn u8s(&self, name: &str, want: &[usize]) -> Result<&[u8]> {
        let v = self.view(name)?;
        self.check(name, v.shape(), want)?;
        if v.dtype() != Dtype::U8 {
            return Err(bad(format!("{name}: dtype {:?}, expected U8", v.dtype())));
        }
        Ok(v.data())
    }
}

/// Rows `parity, parity + 2, ...` of a row-major buffer of `rows` rows of `row_len` bytes.
fn every_other_row(buf: &[u8], rows: usize, row_len: usize, parity: usize) -> Vec<u8> {
    (parity..rows)
        .step_by(2)
        .flat_map(|r| &buf[r * row_len..(r + 1) * row_len])
        .copied()
        .collect()
}

/// Loads the checkpoint in `dir` onto `device`.
pub fn load_hf(dir: &Path, device: &Device) -> Result<Weights> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|source| Error::Io {
        context: format!("reading {}", cfg_path.display()),
        source,
    })?;
    let j: Json =
        serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", cfg_path.display())))?;
    let cfg = config_from_json(&j)?;
    let files = Files::open(dir)?;
    let r = Reader {
        files: files.parsed()?,
        device,
    };
    let (d, q, kv) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim());
    let (e, ff) = (cfg.n_expert, cfg.n_ff_exp);
    let vocab = cfg.vocab_size.unwrap_or(0);

    let emb = r.view("model.embed_tokens.weight")?;
    r.check("model.embed_tokens.weight", emb.shape(), &[vocab, d])?;
    let ty = match emb.dtype() {
        Dtype::F32 => GgmlType::F32,
        Dtype::F16 => GgmlType::F16,
        Dtype::BF16 => GgmlType::BF16,
        other => return Err(bad(format!("model.embed_tokens.weight: dtype {other:?}"))),
    };
    let token_embd = Embedding::from_rows(Arc::new(emb.data().to_vec()), ty, d, vocab);

    let mut layers = Vec::with_capacity(cfg.n_layer);
    for il in 0..cfg.n_layer {
        let p = format!("model.layers.{il}.");
        let f = |n: &str, shape: &[usize]| r.float(&format!("{p}{n}"), shape);
        let g = d / 32;
        let gf = ff / 32;
        let (gate, up, gate_b, up_b, down) =
            if r.has(&format!("{p}mlp.experts.gate_up_proj_blocks")) {
                let blocks = r.u8s(
                    &format!("{p}mlp.experts.gate_up_proj_blocks"),
                    &[e, 2 * ff, g, 16],
                )?;
                let scales = r.u8s(
                    &format!("{p}mlp.experts.gate_up_proj_scales"),
                    &[e, 2 * ff, g],
                )?;
                let pack = |parity: usize| -> Result<Tensor> {
                    let b = every_other_row(blocks, e * 2 * ff, g * 16, parity); // (e*ff, g*16)
                    let s = every_other_row(scales, e * 2 * ff, g, parity); // (e*ff, g)
                    let ggml = repack_hf_to_ggml(&b, &s).map_err(|source| Error::Dequant {
                        tensor: format!("{p}mlp.experts.gate_up_proj"),
                        source,
                    })?;
                    Ok(Tensor::from_vec(ggml, (e, ff, g * 17), device)?) // (e, ff, d/32*17)
                };
                let db = r.u8s(&format!("{p}mlp.experts.down_proj_blocks"), &[e, d, gf, 16])?;
                let ds = r.u8s(&format!("{p}mlp.experts.down_proj_scales"), &[e, d, gf])?;
                let down = repack_hf_to_ggml(db, ds).map_err(|source| Error::Dequant {
                    tensor: format!("{p}mlp.experts.down_proj"),
                    source,
                })?;
                let bias = f("mlp.experts.gate_up_proj_bias", &[e, 2 * ff])?.reshape((e, ff, 2))?; // (e, ff, [gate, up])
                (
                    Experts::Mxfp4 {
                        blocks: pack(0)?,
                        k: d,
                    },
                    Experts::Mxfp4 {
                        blocks: pack(1)?,
                        k: d,
                    },
                    bias.narrow(2, 0, 1)?.squeeze(2)?.contiguous()?,
                    bias.narrow(2, 1, 1)?.squeeze(2)?.contiguous()?,
                    Experts::Mxfp4 {
                        blocks: Tensor::from_vec(down, (e, d, gf * 17), device)?,
                        k: ff,
                    },
                )
            } else {
                // Dequantized layout: x @ W, gate/up interleaved on the last dim.
                let gu = f("mlp.experts.gate_up_proj", &[e, d, 2 * ff])?.reshape((e, d, ff, 2))?;
                let half = |i: usize| -> Result<Tensor> {
                    Ok(gu
                        .narrow(3, i, 1)?
                        .squeeze(3)?
                        .transpose(1, 2)?
                        .contiguous()?)
                }; // (e, ff, d)
                let bias = f("mlp.experts.gate_up_proj_bias", &[e, 2 * ff])?.reshape((e, ff, 2))?;
                let down = f("mlp.experts.down_proj", &[e, ff, d])?
                    .transpose(1, 2)?
                    .contiguous()?; // (e, d, ff)
                (
                    Experts::Dense(half(0)?),
                    Experts::Dense(half(1)?),
                    bias.narrow(2, 0, 1)?.squeeze(2)?.contiguous()?,
                    bias.narrow(2, 1, 1)?.squeeze(2)?.contiguous()?,
                    Experts::Dense(down),
                )
            };
        layers.push(LayerWeights {
            attn_norm: f("input_layernorm.weight", &[d])?,
            attn_q: Matrix::Dense(f("self_attn.q_proj.weight", &[q, d])?),
            attn_q_b: f("self_attn.q_proj.bias", &[q])?,
            attn_k: Matrix::Dense(f("self_attn.k_proj.weight", &[kv, d])?),
            attn_k_b: f("self_attn.k_proj.bias", &[kv])?,
            attn_v: Matrix::Dense(f("self_attn.v_proj.weight", &[kv, d])?),
            attn_v_b: f("self_attn.v_proj.bias", &[kv])?,
            attn_output: Matrix::Dense(f("self_attn.o_proj.weight", &[d, q])?),
            attn_output_b: f("self_attn.o_proj.bias", &[d])?,
            attn_sinks: f("self_attn.sinks", &[cfg.n_head])?,
            post_attention_norm: f("post_attention_layernorm.weight", &[d])?,
            ffn_gate_inp: f("mlp.router.weight", &[e, d])?,
            ffn_gate_inp_b: f("mlp.router.bias", &[e])?,
            ffn_gate_exps: gate,
            ffn_gate_exps_b: gate_b,
            ffn_up_exps: up,
            ffn_up_exps_b: up_b,
            ffn_down_exps: down,
            ffn_down_exps_b: f("mlp.experts.down_proj_bias", &[e, d])?,
        });
    }
    let output_norm = r.float("model.norm.weight", &[d])?;
    let output = Matrix::Dense(r.float("lm_head.weight", &[vocab, d])?);
    Ok(Weights {
        config: cfg,
        token_embd,
        layers,
        output_norm,
        output,
    })
}
