//! The KV cache and chunking do not change the numbers: token-by-token decode, chunked
//! prefill of any size, several turns and sequences past the sliding window give the logits
//! of one prefill (relative L2 ≤ 1e-5).

mod common;

use candle_core::Tensor;
use common::*;
use gpt_engine::engine::{Engine, EngineOptions, FinishReason, Request};
use gpt_engine::model::rope::YarnRounding;
use gpt_engine::model::{prefill_logits, GptOss, Logits};
use gpt_engine::sampling::SamplingParams;
use rand::{Rng, SeedableRng};

const MAX_REL_L2: f64 = 1e-5;

fn random_tokens(n: usize, seed: u64) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..200_000u32)).collect()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

/// Runs `tokens` in pieces of the given sizes (cycled), collecting every position's logits.
fn chunked(model: &GptOss, tokens: &[u32], sizes: &[usize]) -> Vec<Vec<f32>> {
    let mut cache = model.new_cache(tokens.len(), 16).unwrap();
    let mut out = Vec::new();
    let (mut i, mut k) = (0, 0);
    while i < tokens.len() {
        let n = sizes[k % sizes.len()].min(tokens.len() - i);
        out.extend(rows(
            &model
                .forward_seq(&tokens[i..i + n], &mut cache, Logits::All)
                .unwrap(),
        ));
        i += n;
        k += 1;
    }
    assert_eq!(cache.pos(), tokens.len());
    out
}

fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], what: &str) {
    assert_eq!(a.len(), b.len());
    for (t, (x, y)) in a.iter().zip(b).enumerate() {
        let rel = rel_l2(x, y);
        assert!(
            rel <= MAX_REL_L2,
            "{what}: position {t}: relative L2 {rel:.3e}"
        );
    }
}

#[test]
fn decode_and_chunked_prefill_equal_one_prefill() {
    let model = load(&tiny_path(false), YarnRounding::Reference);
    // 37 tokens: many times the sliding window (4), not a multiple of any chunk size.
    let tokens = random_tokens(37, 7);
    let full = rows(&prefill_logits(&model, &tokens).unwrap());
    assert_close(&chunked(&model, &tokens, &[1]), &full, "token by token");
    for sizes in [&[2][..], &[3], &[5], &[4], &[16], &[1, 7, 2, 11]] {
        assert_close(
            &chunked(&model, &tokens, sizes),
            &full,
            &format!("chunks {sizes:?}"),
        );
    }
}

#[test]
fn last_logits_equal_the_last_row() {
    let model = load(&tiny_path(false), YarnRounding::Reference);
    let tokens = random_tokens(9, 8);
    let full = rows(&prefill_logits(&model, &tokens).unwrap());
    let mut cache = model.new_cache(9, 9).unwrap();
    let last = rows(
        &model
            .forward_seq(&tokens, &mut cache, Logits::Last)
            .unwrap(),
    );
    assert_close(&last, &full[8..], "Logits::Last");
}

fn engine(model: GptOss, ctx: usize) -> Engine {
    Engine::new(
        model,
        None,
        EngineOptions {
            ctx: Some(ctx),
            kv_memory: Some(1 << 22),
            max_batch_tokens: 8,
            ..Default::default()
        },
    )
    .unwrap()
}

fn greedy(prompt: &[u32], max_tokens: usize) -> Request {
    let mut r = Request::new(prompt.to_vec(), max_tokens);
    r.sampling = SamplingParams::greedy();
    r
}

#[test]
fn turns_reuse_the_cache() {
    let model = load(&tiny_path(false), YarnRounding::Reference);
    let tokens = random_tokens(40, 9);
    let full = rows(&prefill_logits(&model, &tokens).unwrap());
    let e = engine(model, 64);
    // Turn 1: the first 20 tokens; turn 2 extends them: the 16 of the whole blocks come from
    // the prefix cache.
    let out1 = e.submit(greedy(&tokens[..20], 1)).unwrap().collect();
    assert_eq!(out1.finish, Some(FinishReason::Length), "{out1:?}");
    assert_eq!(out1.usage.cached_tokens, 0);
    assert_eq!(
        out1.tokens[0] as usize,
        argmax(&full[19]),
        "greedy = argmax of the logits"
    );
    let out2 = e.submit(greedy(&tokens, 1)).unwrap().collect();
    assert_eq!(
        out2.usage.cached_tokens, 16,
        "a new turn computes only its new tokens"
    );
    assert_eq!(out2.tokens[0] as usize, argmax(&full[39]));
    // A prompt that does not extend it starts over.
    let other = random_tokens(5, 10);
    assert_eq!(
        e.submit(greedy(&other, 1))
            .unwrap()
            .collect()
            .usage
            .cached_tokens,
        0
    );
}

#[test]
fn greedy_generation_follows_argmax_of_logits() {
    let model = load(&tiny_path(false), YarnRounding::Reference);
    let prompt = random_tokens(6, 11);
    let mut seq = prompt.clone();
    let mut want = Vec::new();
    for _ in 0..10 {
        let logits = rows(&prefill_logits(&model, &seq).unwrap());
        let t = argmax(logits.last().unwrap()) as u32;
        want.push(t);
        seq.push(t);
    }
    let out = engine(model, 64)
        .submit(greedy(&prompt, 10))
        .unwrap()
        .collect();
    assert_eq!(out.tokens, want);
    assert_eq!(out.finish, Some(FinishReason::Length));
    assert_eq!(out.usage.completion_tokens, 10);
}

#[test]
fn prompt_longer_than_context_is_refused_before_compute() {
    let e = engine(load(&tiny_path(false), YarnRounding::Reference), 8);
    let err = e.submit(greedy(&random_tokens(8, 1), 4)).unwrap_err();
    assert!(
        err.to_string().contains("does not fit the context of 8"),
        "{err}"
    );
    // max_tokens is clamped to what the context leaves.
    let out = e
        .submit(greedy(&random_tokens(5, 1), 100))
        .unwrap()
        .collect();
    assert_eq!(out.tokens.len(), 3);
    assert_eq!(out.finish, Some(FinishReason::Length));
}

#[test]
fn grouped_expert_path_equals_the_fused_kernel() {
    // The prefill path used on CUDA (per-expert dequantize + GEMM) run on the CPU, against
    // the fused MXFP4 MoE kernel.
    use candle_core::Device;
    use gpt_engine::loader::{load_model, LoadConfig};
    use gpt_engine::model::ModelOptions;
    let tokens = random_tokens(23, 12);
    let fused =
        rows(&prefill_logits(&load(&tiny_path(false), YarnRounding::Reference), &tokens).unwrap());
    let cfg = LoadConfig {
        model: ModelOptions {
            moe_grouped_min_slots: Some(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let grouped_model = load_model(&tiny_path(false), &Device::Cpu, &cfg, None)
        .unwrap()
        .0;
    let grouped = rows(&prefill_logits(&grouped_model, &tokens).unwrap());
    assert_close(&grouped, &fused, "grouped experts");
}

/// The memory plan counts exactly what the prepared weights hold, in both dense modes.
#[test]
fn the_memory_plan_equals_the_prepared_weights() {
    use candle_core::Device;
    use gpt_engine::loader::{load_model, LoadConfig};
    use gpt_weights::plan::{plan, DenseMode, PlanRequest};
    for dense in [DenseMode::F32, DenseMode::Quantized] {
        let cfg = LoadConfig {
            dense,
            ..Default::default()
        };
        let (model, file) = load_model(&tiny_path(false), &Device::Cpu, &cfg, None).unwrap();
        let req = PlanRequest {
            ctx: 64,
            seqs: 1,
            chunk: 16,
            dense,
            kv_elem_bytes: 4,
            fused_decode: false,
            cpu_blocks: true,
            host_moe_layers: 0,
        };
        let p = plan(&file, model.config(), &req).unwrap();
        assert_eq!(p.weights_device, model.weight_bytes(), "{dense:?}");
    }
}
