//! Synthetic GPT-OSS GGUFs with random weights, for tests (tiny) and for speed and memory work
//! (the exact shapes and types of the ggml-org 20B / 120B files).
//!
//! Weights are drawn from a seeded ChaCha8 stream, so the same spec and seed give the same file
//! byte for byte on every machine. Scales keep activations sane: dense rows have about unit
//! norm after projection, MXFP4 exponents are chosen from the input width.

use std::io::Write;
use std::path::{Path, PathBuf};

use gguf_format::{Array, GgmlType, GgufWriter, SplitPolicy, Value};
use gpt_weights::names::{self, LayerTensor, TensorName};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{EngineError, Result};
use crate::tokenizer::Vocab;

/// The shape and types of a synthetic model.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSpec {
    /// Name written to `general.name`.
    pub name: String,
    /// Blocks.
    pub n_layer: usize,
    /// Hidden size.
    pub n_embd: usize,
    /// Query heads.
    pub n_head: usize,
    /// KV heads.
    pub n_head_kv: usize,
    /// Head width.
    pub head_dim: usize,
    /// Experts.
    pub n_expert: usize,
    /// Experts per token.
    pub n_expert_used: usize,
    /// Expert hidden width.
    pub n_ff_exp: usize,
    /// Sliding window.
    pub sliding_window: usize,
    /// Training context.
    pub context_length: usize,
    /// Type of dense matrices (embedding, attention, output).
    pub dense_type: GgmlType,
    /// Type of expert matrices.
    pub expert_type: GgmlType,
    /// Store every quantized tensor as F32 holding exactly the values of the quantized draw
    /// (same seed, same values), for references such as llama.cpp whose CPU MXFP4 and Q8_0
    /// paths round activations to Q8.
    pub f32_values: bool,
    /// RNG seed.
    pub seed: u64,
}

impl SynthSpec {
    /// The tiny test model: 4 layers (2 sliding with window 4, 2 full), GQA 4/2, 4 experts top-2,
    /// MXFP4 experts, Q8_0 dense, YaRN, the real o200k_harmony vocabulary.
    pub fn tiny() -> Self {
        Self {
            name: "gpt-oss tiny (random)".into(),
            n_layer: 4,
            n_embd: 64,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 32,
            n_expert: 4,
            n_expert_used: 2,
            n_ff_exp: 96,
            sliding_window: 4,
            context_length: 131072,
            dense_type: GgmlType::Q8_0,
            expert_type: GgmlType::MXFP4,
            f32_values: false,
            seed: 0x6770_746f_7373,
        }
    }

    /// The shapes and types of ggml-org's `gpt-oss-20b-mxfp4.gguf` (spec §1, §3).
    pub fn gpt_oss_20b() -> Self {
        Self {
            name: "gpt-oss-20b-shaped (random)".into(),
            n_layer: 24,
            n_embd: 2880,
            n_head: 64,
            n_head_kv: 8,
            head_dim: 64,
            n_expert: 32,
            n_expert_used: 4,
            n_ff_exp: 2880,
            sliding_window: 128,
            context_length: 131072,
            dense_type: GgmlType::Q8_0,
            expert_type: GgmlType::MXFP4,
            f32_values: false,
            seed: 20,
        }
    }

    /// The shapes of gpt-oss-120b: 36 layers, 128 experts.
    pub fn gpt_oss_120b() -> Self {
        Self {
            name: "gpt-oss-120b-shaped (random)".into(),
            n_layer: 36,
            n_expert: 128,
            seed: 120,
            ..Self::gpt_oss_20b()
        }
    }

    /// A preset by name: `tiny`, `20b`, `120b`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "20b" => Some(Self::gpt_oss_20b()),
            "120b" => Some(Self::gpt_oss_120b()),
            _ => None,
        }
    }
}

fn arr_str(v: &[String]) -> Value {
    Value::Array(Array::String(v.to_vec()))
}

fn metadata(w: &mut GgufWriter, s: &SynthSpec, vocab: &Vocab) -> Result<()> {
    let a = |k: &str| format!("gpt-oss.{k}");
    let u = |v: usize| Value::U32(v as u32);
    let kvs: Vec<(String, Value)> = vec![
        (
            "general.architecture".into(),
            Value::String("gpt-oss".into()),
        ),
        ("general.type".into(), Value::String("model".into())),
        ("general.name".into(), Value::String(s.name.clone())),
        ("general.quantization_version".into(), Value::U32(2)),
        ("general.file_type".into(), Value::U32(38)),
        (a("block_count"), u(s.n_layer)),
        (a("context_length"), u(s.context_length)),
        (a("embedding_length"), u(s.n_embd)),
        (a("feed_forward_length"), u(s.n_ff_exp)),
        (a("attention.head_count"), u(s.n_head)),
        (a("attention.head_count_kv"), u(s.n_head_kv)),
        (a("rope.freq_base"), Value::F32(150000.0)),
        (a("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (a("expert_count"), u(s.n_expert)),
        (a("expert_used_count"), u(s.n_expert_used)),
        (a("attention.key_length"), u(s.head_dim)),
        (a("attention.value_length"), u(s.head_dim)),
        (a("attention.sliding_window"), u(s.sliding_window)),
        (a("expert_feed_forward_length"), u(s.n_ff_exp)),
        (a("rope.scaling.type"), Value::String("yarn".into())),
        (a("rope.scaling.factor"), Value::F32(32.0)),
        (a("rope.scaling.original_context_length"), Value::U32(4096)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("gpt-4o".into())),
        ("tokenizer.ggml.tokens".into(), arr_str(&vocab.tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(Array::I32(vocab.token_types.clone())),
        ),
        ("tokenizer.ggml.merges".into(), arr_str(&vocab.merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(vocab.bos)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(vocab.eos)),
        (
            "tokenizer.ggml.padding_token_id".into(),
            Value::U32(vocab.pad),
        ),
    ];
    for (k, v) in kvs {
        w.add_kv(k, v)?;
    }
    Ok(())
}

/// GGUF dims (ne0 first), type and value scale of each tensor.
fn layout(s: &SynthSpec, vocab: usize) -> Vec<(TensorName, Vec<u64>, GgmlType, f32)> {
    let (d, q, kv) = (
        s.n_embd as u64,
        (s.n_head * s.head_dim) as u64,
        (s.n_head_kv * s.head_dim) as u64,
    );
    let (ne, ff) = (s.n_expert as u64, s.n_ff_exp as u64);
    let inv = |n: u64| 1.0 / (n as f32).sqrt();
    names::all(s.n_layer)
        .into_iter()
        .map(|name| {
            use LayerTensor::*;
            let (dims, ty, scale) = match name {
                TensorName::TokenEmbd => (vec![d, vocab as u64], s.dense_type, 1.0),
                TensorName::Output => (vec![d, vocab as u64], s.dense_type, inv(d)),
                TensorName::OutputNorm => (vec![d], GgmlType::F32, -1.0),
                TensorName::Layer(_, t) => match t {
                    AttnNorm | PostAttentionNorm => (vec![d], GgmlType::F32, -1.0),
                    AttnQ => (vec![d, q], s.dense_type, inv(d)),
                    AttnK | AttnV => (vec![d, kv], s.dense_type, inv(d)),
                    AttnOutput => (vec![q, d], s.dense_type, inv(q)),
                    AttnQBias => (vec![q], GgmlType::F32, 0.1),
                    AttnKBias | AttnVBias => (vec![kv], GgmlType::F32, 0.1),
                    AttnOutputBias => (vec![d], GgmlType::F32, 0.1),
                    AttnSinks => (vec![s.n_head as u64], GgmlType::F32, 1.0),
                    FfnGateInp => (vec![d, ne], GgmlType::F32, inv(d)),
                    FfnGateInpBias => (vec![ne], GgmlType::F32, 0.1),
                    FfnGateExps | FfnUpExps => (vec![d, ff, ne], s.expert_type, inv(d)),
                    FfnDownExps => (vec![ff, d, ne], s.expert_type, inv(ff)),
                    FfnGateExpsBias | FfnUpExpsBias => (vec![ff, ne], GgmlType::F32, 0.1),
                    FfnDownExpsBias => (vec![d, ne], GgmlType::F32, 0.1),
                },
            };
            let ty = if ty == s.dense_type {
                dense_type_for(ty, dims[0])
            } else {
                ty
            };
            (name, dims, ty, scale)
        })
        .collect()
}

/// The type a dense matrix of rows of `cols` elements gets when `ty` is asked for: llama.cpp's
/// quantizer falls back from K-quants (256-element super-blocks) when `cols % 256 != 0`, as in
/// gpt-oss's 2880-wide rows: Q4_K to Q5_0, Q5_K to Q5_1, Q6_K to Q8_0, and Q2_K / Q3_K to IQ4_NL.
pub fn dense_type_for(ty: GgmlType, cols: u64) -> GgmlType {
    use GgmlType as T;
    if cols.is_multiple_of(256) {
        return ty;
    }
    match ty {
        T::Q4_K => T::Q5_0,
        T::Q5_K => T::Q5_1,
        T::Q6_K => T::Q8_0,
        T::Q2_K | T::Q3_K => T::IQ4_NL,
        other => other,
    }
}

/// The dense types [`write_model`] can write (`--dense-type`).
pub const DENSE_TYPES: [GgmlType; 10] = [
    GgmlType::Q8_0,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::IQ4_NL,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// Random blocks of `bb` bytes; for each `(at, v)` of `scales`, the f16 at byte `at` of every
/// block is `v` times a jitter in [0.75, 1.25).
fn fill_blocks(rng: &mut ChaCha8Rng, out: &mut [u8], bb: usize, scales: &[(usize, f32)]) {
    rng.fill_bytes(out);
    for b in out.chunks_exact_mut(bb) {
        for &(at, v) in scales {
            let jitter = rng.random_range(0.75f32..1.25);
            b[at..at + 2].copy_from_slice(&half::f16::from_f32(v * jitter).to_le_bytes());
        }
    }
}

/// Fills `out` with random data of type `ty` whose values are about uniform in
/// `(-scale*sqrt(3), scale*sqrt(3))`; a negative `scale` draws norm weights around 1.
fn fill(rng: &mut ChaCha8Rng, ty: GgmlType, scale: f32, out: &mut [u8]) -> Result<()> {
    let amp = scale.abs() * 3f32.sqrt();
    match ty {
        GgmlType::F32 => {
            for c in out.chunks_exact_mut(4) {
                let u: f32 = rng.random_range(-1.0..1.0);
                let v = if scale < 0.0 { 1.0 + 0.2 * u } else { amp * u };
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::Q8_0 => {
            let d = half::f16::from_f32(amp / 127.0).to_le_bytes();
            rng.fill_bytes(out);
            for b in out.chunks_exact_mut(34) {
                let jitter = rng.random_range(0.75f32..1.25);
                let dj = half::f16::from_f32(half::f16::from_le_bytes(d).to_f32() * jitter);
                b[..2].copy_from_slice(&dj.to_le_bytes());
                for q in &mut b[2..] {
                    if *q == 0x80 {
                        *q = 0x81; // keep i8 in [-127, 127] like ggml's quantizer
                    }
                }
            }
        }
        GgmlType::MXFP4 => {
            // Largest |value| is 12 * 2^(e-128); aim it at ~2 * amp.
            let center = 128.0 + (2.0 * amp / 12.0).log2().round();
            let lo = (center - 2.0).clamp(2.0, 250.0) as u8;
            rng.fill_bytes(out);
            for b in out.chunks_exact_mut(17) {
                b[0] = rng.random_range(lo..=lo + 3);
            }
        }
        GgmlType::F16 | GgmlType::BF16 => {
            for c in out.chunks_exact_mut(2) {
                let v = amp * rng.random_range(-1.0f32..1.0);
                let b = if ty == GgmlType::F16 {
                    half::f16::from_f32(v).to_le_bytes()
                } else {
                    half::bf16::from_f32(v).to_le_bytes()
                };
                c.copy_from_slice(&b);
            }
        }
        // Legacy blocks: values (q - 8) d, (q - 16) d, q d + m, KVALUES[q] d.
        GgmlType::Q4_0 => fill_blocks(rng, out, 18, &[(0, amp / 8.0)]),
        GgmlType::Q5_0 => fill_blocks(rng, out, 22, &[(0, amp / 16.0)]),
        GgmlType::Q5_1 => fill_blocks(rng, out, 24, &[(0, amp * 2.0 / 31.0), (2, -amp)]),
        GgmlType::IQ4_NL => fill_blocks(rng, out, 18, &[(0, amp / 127.0)]),
        // K-quants: random 6-bit sub-scales (Q4_K/Q5_K: d sc q - dmin m; Q6_K: d sc (q - 32)).
        GgmlType::Q4_K => fill_blocks(rng, out, 144, &[(0, amp * 2.0 / 945.0), (2, amp / 63.0)]),
        GgmlType::Q5_K => fill_blocks(rng, out, 176, &[(0, amp * 2.0 / 1953.0), (2, amp / 63.0)]),
        GgmlType::Q6_K => fill_blocks(rng, out, 210, &[(208, amp / 2048.0)]),
        other => {
            return Err(EngineError::Other(format!(
                "synthetic models cannot write {other} tensors"
            )))
        }
    }
    Ok(())
}

/// Writes a random-weight GPT-OSS GGUF for `spec` to `path`, streaming tensor by tensor.
/// `progress(done, total)` is called after each tensor with bytes written.
pub fn write_model(
    spec: &SynthSpec,
    vocab: &Vocab,
    path: &Path,
    progress: impl FnMut(u64, u64),
) -> Result<()> {
    write_model_split(spec, vocab, path, SplitPolicy::default(), progress).map(|_| ())
}

/// [`write_model`] as a split set next to `path` (`name.gguf` gives `name-00001-of-0000N.gguf`,
/// …; the published gpt-oss-120b files' layout) when `split` asks for more than one shard, else
/// `path` itself. The shards are written into a hidden folder beside them and moved in place
/// at the end, so an interrupted run leaves no set that looks whole. Returns the paths.
pub fn write_model_split(
    spec: &SynthSpec,
    vocab: &Vocab,
    path: &Path,
    split: SplitPolicy,
    mut progress: impl FnMut(u64, u64),
) -> Result<Vec<PathBuf>> {
    let mut w = GgufWriter::new();
    metadata(&mut w, spec, vocab)?;
    let tensors = layout(spec, vocab.tokens.len());
    let mut total = 0u64;
    let stored = |ty: GgmlType| {
        if spec.f32_values && ty.is_quantized() {
            GgmlType::F32
        } else {
            ty
        }
    };
    for (name, dims, ty, _) in &tensors {
        w.add_tensor_info(name.to_string(), dims, stored(*ty))?;
        let n: u64 = dims.iter().product();
        total += stored(*ty).bytes_for(n).unwrap_or(0);
    }
    let io = |what: &str, p: &Path, e: std::io::Error| {
        EngineError::Other(format!("{what} {}: {e}", p.display()))
    };
    let name = path
        .file_name()
        .ok_or_else(|| EngineError::Other(format!("{}: no file name", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    std::fs::create_dir_all(&tmp).map_err(|e| io("create", &tmp, e))?;
    let mut done = 0u64;
    let mut buf = Vec::new();
    let written = w.write_split(tmp.join(name), split, |i, info, out: &mut dyn Write| {
        let (_, _, ty, scale) = &tensors[i];
        // One RNG stream per tensor: the file does not depend on write order or chunking.
        let mut rng =
            ChaCha8Rng::seed_from_u64(spec.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // Bytes of the drawn type; the stream is the same whatever type is stored.
        let n = ty.bytes_for(info.n_elements()).unwrap_or(0) as usize;
        let unit = ty.type_size().unwrap_or(1) as usize;
        let chunk = (1 << 24) / unit * unit;
        let mut left = n;
        while left > 0 {
            let len = left.min(chunk);
            buf.resize(len, 0);
            fill(&mut rng, *ty, *scale, &mut buf).map_err(std::io::Error::other)?;
            if stored(*ty) != *ty {
                let n_el = len / unit * ty.block_size().unwrap_or(1) as usize;
                let vals = gpt_weights::dequant::dequantize_f32(*ty, &buf, n_el)
                    .map_err(std::io::Error::other)?;
                let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
                out.write_all(&bytes)?;
            } else {
                out.write_all(&buf)?;
            }
            left -= len;
        }
        done += info.n_bytes().unwrap_or(0);
        progress(done, total);
        Ok(())
    })?;
    let mut out = Vec::with_capacity(written.len());
    for p in written {
        let dst = path.with_file_name(p.file_name().unwrap_or_default());
        std::fs::rename(&p, &dst).map_err(|e| io("rename", &p, e))?;
        out.push(dst);
    }
    std::fs::remove_dir(&tmp).map_err(|e| io("remove", &tmp, e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_quants_fall_back_like_llama_cpp_on_rows_not_of_256() {
        assert_eq!(dense_type_for(GgmlType::Q4_K, 2880), GgmlType::Q5_0);
        assert_eq!(dense_type_for(GgmlType::Q5_K, 2880), GgmlType::Q5_1);
        assert_eq!(dense_type_for(GgmlType::Q6_K, 2880), GgmlType::Q8_0);
        assert_eq!(dense_type_for(GgmlType::Q4_K, 4096), GgmlType::Q4_K);
        assert_eq!(dense_type_for(GgmlType::F16, 2880), GgmlType::F16);
    }

    /// Every `--dense-type` writes a file that validates as GPT-OSS, whose dense matrices decode
    /// to values of about the asked spread (not zeros, not huge).
    #[test]
    fn every_dense_type_writes_a_valid_model_of_sane_values() {
        let mut vocab = crate::tokenizer::o200k_harmony_vocab().unwrap();
        vocab.tokens.truncate(1024);
        vocab.token_types.truncate(1024);
        vocab.merges.truncate(1000);
        let dir = std::env::temp_dir();
        for ty in DENSE_TYPES {
            let mut spec = SynthSpec::tiny();
            spec.dense_type = ty;
            // 256-wide rows so that K-quants are written as K-quants.
            spec.n_embd = 256;
            let path = dir.join(format!("gptoss-dense-{ty}-{}.gguf", std::process::id()));
            write_model(&spec, &vocab, &path, |_, _| {}).unwrap();
            let model = gguf_format::GgufModel::open(&path).unwrap();
            let cfg = gpt_weights::GptOssConfig::from_metadata(model.metadata()).unwrap();
            gpt_weights::spec::validate(&model, &cfg).unwrap();
            let info = model.tensor("blk.0.attn_q.weight").unwrap().clone();
            assert_eq!(info.ty, ty, "row length 256 keeps {ty}");
            let v = gpt_weights::dequant::dequantize_f32(
                ty,
                model.tensor_data(&info.name).unwrap(),
                info.n_elements() as usize,
            )
            .unwrap();
            let rms = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
            let want = 1.0 / (spec.n_embd as f32).sqrt(); // the layout's scale for attn_q
            assert!(
                rms > 0.2 * want && rms < 3.0 * want,
                "{ty}: rms {rms} against {want}"
            );
            std::fs::remove_file(&path).ok();
        }
    }
}
