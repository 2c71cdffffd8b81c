//! GPT-OSS validation, config and memory plan on generated GGUFs: a 20B-shaped file (sparse:
//! header only, data section a hole) and broken tiny models, each refused with a message
//! naming the tensor or key.

use gguf_format::{GgmlType, GgufModel, GgufWriter, Value};
use gpt_weights::plan::{plan, DenseMode, PlanRequest};
use gpt_weights::spec::{expected, Kind};
use gpt_weights::{GptOssConfig, Weights};

struct Shape {
    n_layer: u32,
    d: u32,
    heads: u32,
    kv: u32,
    hd: u32,
    experts: u32,
    ff: u32,
    vocab: u64,
}

const SHAPE_20B: Shape = Shape {
    n_layer: 24,
    d: 2880,
    heads: 64,
    kv: 8,
    hd: 64,
    experts: 32,
    ff: 2880,
    vocab: 201088,
};
const SHAPE_TINY: Shape = Shape {
    n_layer: 2,
    d: 64,
    heads: 4,
    kv: 2,
    hd: 16,
    experts: 4,
    ff: 32,
    vocab: 300,
};

fn metadata(s: &Shape) -> Vec<(String, Value)> {
    let a = |k: &str| format!("gpt-oss.{k}");
    vec![
        (
            "general.architecture".into(),
            Value::String("gpt-oss".into()),
        ),
        (a("block_count"), Value::U32(s.n_layer)),
        (a("context_length"), Value::U32(131072)),
        (a("embedding_length"), Value::U32(s.d)),
        (a("feed_forward_length"), Value::U32(s.ff)),
        (a("attention.head_count"), Value::U32(s.heads)),
        (a("attention.head_count_kv"), Value::U32(s.kv)),
        (a("rope.freq_base"), Value::F32(150000.0)),
        (a("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (a("expert_count"), Value::U32(s.experts)),
        (a("expert_used_count"), Value::U32(4.min(s.experts))),
        (a("attention.key_length"), Value::U32(s.hd)),
        (a("attention.value_length"), Value::U32(s.hd)),
        (a("attention.sliding_window"), Value::U32(128)),
        (a("expert_feed_forward_length"), Value::U32(s.ff)),
        (a("rope.scaling.type"), Value::String("yarn".into())),
        (a("rope.scaling.factor"), Value::F32(32.0)),
        (a("rope.scaling.original_context_length"), Value::U32(4096)),
    ]
}

/// The ggml-org file's type for each kind (spec §3).
fn ggml_org_type(kind: Kind) -> GgmlType {
    match kind {
        Kind::Experts => GgmlType::MXFP4,
        Kind::Dense => GgmlType::Q8_0,
        Kind::Vector | Kind::Router => GgmlType::F32,
    }
}

/// Builds a writer for `s` with the metadata minus `drop_key`, passing each expected tensor
/// `(name, dims, type)` through `edit` (None drops it).
fn writer(
    s: &Shape,
    drop_key: Option<&str>,
    edit: impl Fn(String, Vec<u64>, GgmlType) -> Option<(String, Vec<u64>, GgmlType)>,
) -> GgufWriter {
    let mut w = GgufWriter::new();
    for (k, v) in metadata(s) {
        if Some(k.as_str()) != drop_key {
            w.add_kv(k, v).unwrap();
        }
    }
    let full = metadata(s);
    let mut md = gguf_format::Metadata::new();
    for (k, v) in full {
        md.insert(k, v).unwrap();
    }
    let cfg = GptOssConfig::from_metadata(&md).unwrap();
    for spec in expected(&cfg) {
        let mut dims = spec.dims.clone();
        if dims.len() == 2 && dims[1] == 0 {
            dims[1] = s.vocab; // token_embd / output without a tokenizer in the metadata
        }
        if let Some((name, dims, ty)) = edit(spec.name.to_string(), dims, ggml_org_type(spec.kind))
        {
            w.add_tensor_info(name, &dims, ty).unwrap();
        }
    }
    w
}

/// Writes `w` to a temp file with random tensor bytes; returns the path.
fn write_small(w: &GgufWriter, tag: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("checks-{tag}-{}.gguf", std::process::id()));
    let mut state = 0x1234_5678_9abc_def1u64;
    w.write_file(&path, |_, info, out| {
        let n = info.n_bytes().unwrap() as usize;
        let bytes: Vec<u8> = (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Small, finite bytes: exponent bytes of MXFP4 and f16/f32 high bytes stay sane.
                (state % 0x3b) as u8
            })
            .collect();
        out.write_all(&bytes)
    })
    .unwrap();
    path
}

fn open_err(w: &GgufWriter, tag: &str) -> String {
    let path = write_small(w, tag);
    let model = GgufModel::open(&path).unwrap();
    let err = match GptOssConfig::from_metadata(model.metadata()) {
        Err(e) => e.to_string(),
        Ok(cfg) => gpt_weights::spec::validate(&model, &cfg)
            .unwrap_err()
            .to_string(),
    };
    let _ = std::fs::remove_file(&path);
    err
}

#[test]
fn twenty_b_shaped_plan_from_metadata_alone() {
    let w = writer(&SHAPE_20B, None, |n, d, t| Some((n, d, t)));
    // Header only; the 12 GB data section is a hole (sparse file): nothing is read.
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("sparse20b-{}.gguf", std::process::id()));
    let mut f = std::fs::File::create(&path).unwrap();
    let data_offset = w.write_header(&mut f).unwrap();
    f.set_len(data_offset + w.data_size().unwrap()).unwrap();
    drop(f);
    let model = GgufModel::open(&path).unwrap();
    assert_eq!(model.tensor_count(), 459);
    let cfg = GptOssConfig::from_metadata(model.metadata()).unwrap();
    assert_eq!(cfg.sliding_layers.iter().filter(|&&s| s).count(), 12);
    assert!(cfg.is_sliding(0) && !cfg.is_sliding(1));
    let report = gpt_weights::spec::validate(&model, &cfg).unwrap();
    assert_eq!((report.tensors, report.vocab_size), (459, 201088));
    let tensor_bytes: u64 = model.tensors().map(|t| t.n_bytes().unwrap()).sum();
    // spec §3: 12,096,558,336 bytes of tensors in the ggml-org file.
    assert_eq!(tensor_bytes, 12_096_558_336);
    // ctx 8192, chunk 512, f32 KV.
    let plan_of = |dense, fused_decode| {
        let req = PlanRequest {
            ctx: 8192,
            seqs: 1,
            chunk: 512,
            dense,
            kv_elem_bytes: 4,
            fused_decode,
            cpu_blocks: false,
            host_moe_layers: 0,
        };
        plan(&model, &cfg, &req).unwrap()
    };
    let p = plan_of(DenseMode::Quantized, false);
    let embd = 2880 / 32 * 34 * 201088u64;
    assert_eq!(p.weights_host, embd);
    assert_eq!(
        p.weights_device,
        tensor_bytes - embd,
        "quantized: file bytes stay as they are"
    );
    // 12 full layers x 8192 positions x (K+V) x 512 x 4 bytes; sliding: window + chunk.
    assert_eq!(p.kv_full, 12 * 8192 * 2 * 512 * 4);
    assert_eq!(p.kv_sliding, 12 * (128 + 512) * 2 * 512 * 4);
    let f32_plan = plan_of(DenseMode::F32, true);
    assert!(f32_plan.weights_device > p.weights_device);
    assert_eq!(
        f32_plan.fast_form_extra, 0,
        "no fast form on f32 dense weights"
    );
    assert_eq!(p.fast_form_extra, 0, "not asked for");
    // The CUDA fast form: the Q8_0 dense matrices as int8 + f32 scales instead (2 more bytes
    // per 34-byte block), a zero bias for the output head, and while loading the output head
    // (the largest Q8_0 matrix) in both forms.
    let fused = plan_of(DenseMode::Quantized, true);
    let q8_dense: u64 = model
        .tensors()
        .filter(|t| t.ty == gguf_format::GgmlType::Q8_0 && t.name != "token_embd.weight")
        .map(|t| t.n_bytes().unwrap())
        .sum();
    assert_eq!(fused.fast_form_extra, q8_dense / 34 * 2 + 201088 * 4);
    assert_eq!(fused.load_transient, 201088 * 2880 / 32 * 34);
    // The fast path's prefill attention keeps its score tiles on chip: no (heads, chunk, 4096)
    // f32 tile.
    let scores = 64 * 512 * 4096 * 4;
    assert_eq!(
        fused.device_total(),
        p.device_total() + fused.fast_form_extra - scores
    );
    // Logits: one row per sequence, not one per chunk row.
    let vocab = cfg.vocab_size.unwrap_or(0) as u64;
    assert_eq!(p.working, 4 * (512 * 4 * 2880 * 4 * 3 + vocab) + scores);
    let e = p
        .check_fits("cuda:0", 8 << 30, false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not enough memory on cuda:0"), "{e}");

    // `--cpu-moe 12`: the router, experts and expert biases of layers 0..12 move to the host.
    let req = |host_moe_layers| PlanRequest {
        ctx: 8192,
        seqs: 1,
        chunk: 512,
        dense: DenseMode::Quantized,
        kv_elem_bytes: 4,
        fused_decode: true,
        cpu_blocks: false,
        host_moe_layers,
    };
    let moe_bytes: u64 = model
        .tensors()
        .filter(|t| {
            let layer: Option<usize> = t
                .name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse().ok());
            layer.is_some_and(|l| l < 12) && t.name.contains(".ffn_")
        })
        .map(|t| t.n_bytes().unwrap())
        .sum();
    let split = plan(&model, &cfg, &req(12)).unwrap();
    assert_eq!(split.weights_host, fused.weights_host + moe_bytes);
    assert_eq!(split.weights_device, fused.weights_device - moe_bytes);
    assert!(
        moe_bytes > 4 << 30,
        "12 layers of 20B experts: {moe_bytes} B"
    );
    // The suggested N is the smallest that fits.
    let lookup = |n: &str| model.tensor(n);
    let avail = 8u64 << 30;
    let n = gpt_weights::plan::suggest_host_moe_layers(&cfg, &req(0), lookup, avail)
        .unwrap()
        .expect("8 GiB fits with some layers on the host");
    let fits = |n| {
        let p = plan(&model, &cfg, &req(n)).unwrap();
        p.device_total() + p.load_transient <= avail
    };
    assert!(n > 0 && fits(n) && !fits(n - 1), "suggested {n}");
    let none = gpt_weights::plan::suggest_host_moe_layers(&cfg, &req(0), lookup, 1 << 30).unwrap();
    assert_eq!(none, None, "the dense weights alone exceed 1 GiB");

    // The same shapes with F16 attention and output matrices (an F16 variant; loaded as f32):
    // the fast form holds each as two int8 planes and f32 scales (2.125 bytes per weight), and
    // while loading holds what the f32 forms take beyond that plus the largest one in both forms
    // (its loaded f32 values are what the conversion reads: no third copy).
    let f16_infos: std::collections::HashMap<String, gguf_format::TensorInfo> = model
        .tensors()
        .map(|t| {
            let mut t = t.clone();
            let dense = t.name == "output.weight"
                || ["attn_q.", "attn_k.", "attn_v.", "attn_output."]
                    .iter()
                    .any(|m| t.name.contains(m) && t.name.ends_with(".weight"));
            if dense {
                t.ty = gguf_format::GgmlType::F16;
            }
            (t.name.clone(), t)
        })
        .collect();
    let dense_n: Vec<u64> = f16_infos
        .values()
        .filter(|t| t.ty == gguf_format::GgmlType::F16)
        .map(|t| t.n_elements())
        .collect();
    assert_eq!(dense_n.len(), 24 * 4 + 1);
    let f16_plan = |fused_decode| {
        let r = PlanRequest {
            fused_decode,
            ..req(0)
        };
        gpt_weights::plan::plan_from_infos(&cfg, &r, |n| f16_infos.get(n)).unwrap()
    };
    let (generic, fast) = (f16_plan(false), f16_plan(true));
    let (f32_bytes, split_bytes): (u64, u64) = (
        dense_n.iter().map(|n| n * 4).sum(),
        dense_n.iter().map(|n| n * 2 + n / 32 * 4).sum(),
    );
    assert_eq!(
        fast.weights_device,
        generic.weights_device - f32_bytes + split_bytes
    );
    let largest = dense_n.iter().max().unwrap();
    assert_eq!(
        fast.load_transient,
        f32_bytes - split_bytes + largest * 6 + largest / 32 * 4
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn missing_tensor_is_named() {
    let w = writer(&SHAPE_TINY, None, |n, d, t| {
        (n != "blk.1.attn_sinks.weight").then_some((n, d, t))
    });
    let e = open_err(&w, "missing");
    assert!(e.contains("blk.1.attn_sinks.weight: missing"), "{e}");
}

#[test]
fn wrong_shape_is_named() {
    let w = writer(&SHAPE_TINY, None, |n, mut d, t| {
        if n == "blk.0.attn_k.weight" {
            d[1] += 32;
        }
        Some((n, d, t))
    });
    let e = open_err(&w, "shape");
    assert!(
        e.contains("blk.0.attn_k.weight: dims [64, 64], expected [64, 32]"),
        "{e}"
    );
}

#[test]
fn unsupported_type_is_named() {
    let w = writer(&SHAPE_TINY, None, |n, d, t| {
        let t = if n == "blk.1.ffn_down_exps.weight" {
            GgmlType::Q4_0
        } else {
            t
        };
        Some((n, d, t))
    });
    let e = open_err(&w, "type");
    assert!(
        e.contains("blk.1.ffn_down_exps.weight: type Q4_0 not supported"),
        "{e}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let w = writer(&SHAPE_TINY, None, |n, d, t| match n.as_str() {
        "output_norm.weight" => None,
        "blk.0.attn_q.bias" => Some((n, vec![7], t)),
        _ => Some((n, d, t)),
    });
    let mut w = w;
    w.add_tensor_info("blk.0.extra.weight", &[4], GgmlType::F32)
        .unwrap();
    let e = open_err(&w, "many");
    assert!(e.starts_with("3 tensor problem(s)"), "{e}");
    for part in [
        "output_norm.weight: missing",
        "blk.0.attn_q.bias: dims [7]",
        "blk.0.extra.weight: not a GPT-OSS tensor",
    ] {
        assert!(e.contains(part), "{part} not in {e}");
    }
}

#[test]
fn each_missing_required_key_is_named() {
    for key in [
        "gpt-oss.block_count",
        "gpt-oss.embedding_length",
        "gpt-oss.attention.head_count_kv",
        "gpt-oss.attention.sliding_window",
        "gpt-oss.expert_feed_forward_length",
        "gpt-oss.attention.layer_norm_rms_epsilon",
        "gpt-oss.rope.scaling.factor",
    ] {
        let w = writer(&SHAPE_TINY, Some(key), |n, d, t| Some((n, d, t)));
        let e = open_err(&w, "key");
        assert!(e.contains(key), "missing {key}: {e}");
    }
}

#[test]
fn wrong_architecture_is_refused() {
    let mut md = gguf_format::Metadata::new();
    for (k, v) in metadata(&SHAPE_TINY) {
        let v = if k == "general.architecture" {
            Value::String("gptoss".into())
        } else {
            v
        };
        md.insert(k, v).unwrap();
    }
    let e = GptOssConfig::from_metadata(&md).unwrap_err().to_string();
    assert!(e.contains("\"gptoss\""), "{e}");
}

#[test]
fn valid_tiny_model_loads_on_cpu() {
    let w = writer(&SHAPE_TINY, None, |n, d, t| Some((n, d, t)));
    let path = write_small(&w, "load");
    let model = GgufModel::open(&path).unwrap();
    let cfg = GptOssConfig::from_metadata(model.metadata()).unwrap();
    let weights =
        Weights::load(&model, &cfg, &candle_core::Device::Cpu, Default::default()).unwrap();
    assert_eq!(weights.layers.len(), 2);
    assert_eq!(weights.token_embd.vocab(), 300);
    let _ = std::fs::remove_file(&path);
}
