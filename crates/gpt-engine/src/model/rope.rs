//! NeoX-style rotary embeddings with YaRN scaling (spec §6.3).
//!
//! By default the correction-dim bounds are the model's own (OpenAI reference, HF
//! `truncate: false`): `low = 8.0928`, `high = 17.3980` for GPT-OSS. [`YarnRounding::LlamaCpp`]
//! floors/ceils them (8, 18) as llama.cpp's `ggml_rope_yarn_corr_dims` does.

use std::sync::Mutex;

use candle_core::{Device, Result, Tensor};
use gpt_weights::config::{GptOssConfig, RopeScaling};

/// Which YaRN correction-dim bounds to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum YarnRounding {
    /// Unrounded bounds (OpenAI reference, transformers, vLLM).
    #[default]
    Reference,
    /// `floor(low)`, `ceil(high)` (llama.cpp).
    LlamaCpp,
}

/// Precomputed inverse frequencies and magnitude scale for one head width, and cos/sin tables
/// kept on the device (grown on demand), so a forward uploads nothing for RoPE.
#[derive(Debug)]
pub struct Rope {
    /// `inv_freq[i]` for `i < head_dim / 2`.
    pub inv_freq: Vec<f64>,
    /// YaRN magnitude scale ("concentration") applied to cos and sin.
    pub mscale: f64,
    /// cos and sin `(len, head_dim / 2)` for positions `0..len`, on the device last used.
    tables: Mutex<Option<(Tensor, Tensor)>>,
}

/// YaRN correction dim for `n_rot` rotations over the original context (ggml / OpenAI formula).
fn corr_dim(n_dims: f64, n_ctx_orig: f64, n_rot: f64, base: f64) -> f64 {
    n_dims * (n_ctx_orig / (n_rot * 2.0 * std::f64::consts::PI)).ln() / (2.0 * base.ln())
}

impl Rope {
    /// The RoPE tables for `cfg` (`base` = `rope_freq_base`; sliding layers of GPT-OSS use the
    /// same base).
    pub fn new(cfg: &GptOssConfig, base: f32, rounding: YarnRounding) -> Self {
        let d = cfg.head_dim;
        let base = base as f64;
        let half = d / 2;
        let plain: Vec<f64> = (0..half)
            .map(|i| base.powf(-(2.0 * i as f64) / d as f64))
            .collect();
        match cfg.rope_scaling {
            RopeScaling::None => Rope {
                inv_freq: plain,
                mscale: 1.0,
                tables: Mutex::new(None),
            },
            RopeScaling::Yarn {
                factor,
                original_context,
                beta_fast,
                beta_slow,
                attn_factor,
            } => {
                let factor = factor as f64;
                let n_ctx = original_context as f64;
                let mut low = corr_dim(d as f64, n_ctx, beta_fast as f64, base);
                let mut high = corr_dim(d as f64, n_ctx, beta_slow as f64, base);
                if rounding == YarnRounding::LlamaCpp {
                    low = low.floor().max(0.0);
                    high = high.ceil().min(d as f64 - 1.0);
                }
                let span = if high - low == 0.0 { 0.001 } else { high - low };
                let inv_freq = plain
                    .iter()
                    .enumerate()
                    .map(|(i, &extrap)| {
                        let interp = extrap / factor;
                        let ramp = ((i as f64 - low) / span).clamp(0.0, 1.0);
                        extrap * (1.0 - ramp) + interp * ramp
                    })
                    .collect();
                let mscale = (0.1 * factor.ln() + 1.0) * attn_factor as f64;
                Rope {
                    inv_freq,
                    mscale,
                    tables: Mutex::new(None),
                }
            }
        }
    }

    /// cos and sin tables, f32 `(t, head_dim / 2)`, for positions `pos..pos + t`, both already
    /// multiplied by the YaRN magnitude scale.
    pub fn cos_sin(&self, pos: usize, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in pos..pos + t {
            for &f in &self.inv_freq {
                // Angles in f32 like the references (torch computes `t * inv_freq` in f32).
                let theta = (p as f32) * (f as f32);
                cos.push((theta.cos() as f64 * self.mscale) as f32);
                sin.push((theta.sin() as f64 * self.mscale) as f32);
            }
        }
        Ok((
            Tensor::from_vec(cos, (t, half), device)?,
            Tensor::from_vec(sin, (t, half), device)?,
        ))
    }

    /// cos and sin `(t, head_dim / 2)` for positions `pos..pos + t`, cut from the device tables
    /// (rebuilt, twice as long, when `pos + t` passes their end).
    fn tables(&self, pos: usize, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let mut g = self
            .tables
            .lock()
            .map_err(|_| candle_core::Error::Msg("rope: table lock poisoned".into()))?;
        let fits = match g.as_ref() {
            Some((c, _)) => c.dim(0)? >= pos + t && c.device().same_device(device),
            None => false,
        };
        if !fits {
            let have = g.as_ref().map(|(c, _)| c.dim(0).unwrap_or(0)).unwrap_or(0);
            let len = (pos + t).max(2 * have).max(256);
            *g = Some(self.cos_sin(0, len, device)?);
        }
        match g.as_ref() {
            Some((c, s)) => Ok((c.narrow(0, pos, t)?, s.narrow(0, pos, t)?)),
            None => candle_core::bail!("rope: no tables"),
        }
    }

    /// cos and sin `(end, head_dim / 2)` for positions `0..end`, scaled (the fused RoPE's
    /// tables).
    pub fn tables_to(&self, end: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        self.tables(0, end, device)
    }

    /// Rotates `x` f32 `(1, t, h, head_dim)`, row `i` at position `at` row `i` (NeoX pairs
    /// `(i, i + d/2)`).
    pub fn apply(&self, x: &Tensor, at: &Positions) -> Result<Tensor> {
        let (cos, sin) = match at {
            Positions::Run { start, t } => self.tables(*start, *t, x.device())?,
            Positions::Rows { pos, end, rows } => {
                // Gathered once per forward for each table (keyed by its address).
                let key = self as *const Rope as usize;
                let mut rows = rows
                    .lock()
                    .map_err(|_| candle_core::Error::Msg("rope: rows lock poisoned".into()))?;
                match rows.iter().find(|r| r.0 == key) {
                    Some((_, c, s)) => (c.clone(), s.clone()),
                    None => {
                        let (c, s) = self.tables(0, *end, x.device())?;
                        let (c, s) = (c.index_select(pos, 0)?, s.index_select(pos, 0)?); // (t, d/2)
                        rows.push((key, c.clone(), s.clone()));
                        (c, s)
                    }
                }
            }
        };
        candle_nn::rotary_emb::rope_thd(&x.contiguous()?, &cos, &sin)
    }
}

/// The absolute positions of a forward's rows.
#[derive(Debug)]
pub enum Positions {
    /// Rows at `start..start + t` (one chunk).
    Run {
        /// Position of row 0.
        start: usize,
        /// Rows.
        t: usize,
    },
    /// Row `i` at `pos[i]`.
    Rows {
        /// U32 `(t)`, on the device.
        pos: Tensor,
        /// One past the largest position.
        end: usize,
        /// cos and sin `(t, head_dim / 2)` of these rows, per table that asked (its address).
        rows: Mutex<Vec<(usize, Tensor, Tensor)>>,
    },
}

impl Positions {
    /// The rows of chunks `(pos, t)` in order: one run if they continue each other.
    pub fn of(chunks: impl IntoIterator<Item = (usize, usize)>, device: &Device) -> Result<Self> {
        let mut pos: Vec<u32> = Vec::new();
        let mut run: Option<(usize, usize)> = None;
        let mut contiguous = true;
        for (p, t) in chunks {
            run = match run {
                None => Some((p, t)),
                Some((s, n)) if s + n == p && contiguous => Some((s, n + t)),
                Some(r) => {
                    contiguous = false;
                    Some(r)
                }
            };
            let end = u32::try_from(p + t)
                .map_err(|_| candle_core::Error::Msg(format!("rope: position {} > u32", p + t)))?;
            pos.extend(p as u32..end);
        }
        match run {
            Some((start, t)) if contiguous => Ok(Positions::Run { start, t }),
            _ => {
                let end = pos.iter().max().map_or(0, |&m| m as usize + 1);
                let n = pos.len();
                Ok(Positions::Rows {
                    pos: Tensor::from_vec(pos, n, device)?,
                    end,
                    rows: Mutex::new(Vec::new()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GptOssConfig {
        GptOssConfig {
            n_layer: 24,
            n_ctx_train: 131072,
            n_embd: 2880,
            n_head: 64,
            n_head_kv: 8,
            head_dim: 64,
            head_dim_v: 64,
            n_rot: 64,
            rms_eps: 1e-5,
            n_expert: 32,
            n_expert_used: 4,
            n_ff_exp: 2880,
            sliding_window: 128,
            sliding_layers: (0..24).map(|i| i % 2 == 0).collect(),
            rope_freq_base: 150000.0,
            rope_freq_base_swa: 150000.0,
            rope_scaling: RopeScaling::Yarn {
                factor: 32.0,
                original_context: 4096,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attn_factor: 1.0,
            },
            vocab_size: None,
        }
    }

    /// Per-row positions rotate each row as a run at its own position does.
    #[test]
    fn rows_at_their_own_positions_equal_runs() -> Result<()> {
        let dev = Device::Cpu;
        let r = Rope::new(&cfg(), 150000.0, YarnRounding::Reference);
        let x = Tensor::randn(0f32, 1.0, (1, 3, 2, 64), &dev)?;
        let at = Positions::of([(7, 1), (2, 2)], &dev)?;
        assert!(matches!(at, Positions::Rows { end: 8, .. }));
        let got = r.apply(&x, &at)?;
        let one = |i: usize, p: usize| -> Result<Tensor> {
            r.apply(&x.narrow(1, i, 1)?, &Positions::Run { start: p, t: 1 })
        };
        let want = Tensor::cat(&[one(0, 7)?, one(1, 2)?, one(2, 3)?], 1)?;
        let diff = (got - &want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6, "{diff}");
        assert!(matches!(
            Positions::of([(4, 2), (6, 3)], &dev)?,
            Positions::Run { start: 4, t: 5 }
        ));
        Ok(())
    }

    /// Figures written in spec §6.3 (from the OpenAI reference and llama.cpp).
    #[test]
    fn yarn_matches_spec_figures() {
        let low = corr_dim(64.0, 4096.0, 32.0, 150000.0);
        let high = corr_dim(64.0, 4096.0, 1.0, 150000.0);
        assert!((low - 8.092779).abs() < 1e-5, "{low}");
        assert!((high - 17.398024).abs() < 1e-5, "{high}");
        let r = Rope::new(&cfg(), 150000.0, YarnRounding::Reference);
        let l = Rope::new(&cfg(), 150000.0, YarnRounding::LlamaCpp);
        assert!((r.mscale - 1.3465736).abs() < 1e-6);
        let rel = |a: f64, b: f64| ((a - b) / b).abs();
        assert!(rel(r.inv_freq[15], 1.053e-3) < 2e-3, "{}", r.inv_freq[15]);
        assert!(rel(l.inv_freq[15], 1.206e-3) < 2e-3, "{}", l.inv_freq[15]);
        assert!(rel(r.inv_freq[17], 1.293e-4) < 2e-3, "{}", r.inv_freq[17]);
        assert!(rel(l.inv_freq[17], 2.279e-4) < 2e-3, "{}", l.inv_freq[17]);
        // i <= 8 unchanged, i >= 18 divided by 32 (both conventions).
        for i in [0usize, 8, 18, 31] {
            let base = 150000f64.powf(-(2.0 * i as f64) / 64.0);
            let want = if i <= 8 { base } else { base / 32.0 };
            assert!(rel(r.inv_freq[i], want) < 1e-12);
            assert!(rel(l.inv_freq[i], want) < 1e-12);
        }
    }
}
