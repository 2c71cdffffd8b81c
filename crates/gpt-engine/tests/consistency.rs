//! The KV cache and chunking do not change the numbers: token-by-token decode, chunked
//! prefill of any size, several turns and sequences past the sliding window give the logits
//! of one prefill (relative L2 ≤ 1e-5).

mod common;

use candle_core::Tensor;
use common::*;
use gpt_engine::generate::{generate, GenerateParams};
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
    let mut cache = model.new_cache();
    let mut out = Vec::new();
    let (mut i, mut k) = (0, 0);
    while i < tokens.len() {
        let n = sizes[k % sizes.len()].min(tokens.len() - i);
        out.extend(rows(
            &model
                .forward(&tokens[i..i + n], &mut cache, Logits::All)
                .unwrap(),
        ));
        i += n;
        k += 1;
    }
    assert_eq!(cache.pos, tokens.len());
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
    let mut cache = model.new_cache();
    let last = rows(&model.forward(&tokens, &mut cache, Logits::Last).unwrap());
    assert_close(&last, &full[8..], "Logits::Last");
}

#[test]
fn turns_reuse_the_cache() {
    let model = load(&tiny_path(false), YarnRounding::Reference);
    let tokens = random_tokens(30, 9);
    let full = rows(&prefill_logits(&model, &tokens).unwrap());
    let params = GenerateParams {
        max_new_tokens: 1,
        stop_tokens: vec![],
        sampling: SamplingParams::greedy(),
        ctx: 64,
        chunk: 8,
    };
    let mut cache = model.new_cache();
    // Turn 1: the first 12 tokens; turn 2 extends them: only the new 18 are computed.
    let (out1, s1) = generate(&model, &mut cache, &tokens[..12], &params, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(s1.prefill_tokens, 12);
    assert_eq!(
        out1[0] as usize,
        argmax(&full[11]),
        "greedy = argmax of the logits"
    );
    let (out2, s2) = generate(&model, &mut cache, &tokens, &params, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(
        s2.prefill_tokens, 18,
        "a new turn computes only its new tokens"
    );
    assert_eq!(out2[0] as usize, argmax(&full[29]));
    // A prompt that does not extend the cache starts over.
    let other = random_tokens(5, 10);
    let (_, s3) = generate(&model, &mut cache, &other, &params, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(s3.prefill_tokens, 5);
}

#[test]
fn greedy_generation_follows_argmax_of_logits() {
    let model = load(&tiny_path(false), YarnRounding::Reference);
    let prompt = random_tokens(6, 11);
    let params = GenerateParams {
        max_new_tokens: 10,
        stop_tokens: vec![],
        sampling: SamplingParams::greedy(),
        ctx: 64,
        chunk: 4,
    };
    let mut cache = model.new_cache();
    let (out, _) = generate(&model, &mut cache, &prompt, &params, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(out.len(), 10);
    let mut seq = prompt.clone();
    for &tok in &out {
        let logits = rows(&prefill_logits(&model, &seq).unwrap());
        assert_eq!(tok as usize, argmax(logits.last().unwrap()));
        seq.push(tok);
    }
}

#[test]
fn prompt_longer_than_context_is_refused_before_compute() {
    let model = load(&tiny_path(false), YarnRounding::Reference);
    let params = GenerateParams {
        max_new_tokens: 4,
        stop_tokens: vec![],
        sampling: SamplingParams::greedy(),
        ctx: 8,
        chunk: 4,
    };
    let mut cache = model.new_cache();
    let err = generate(&model, &mut cache, &random_tokens(8, 1), &params, |_| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("does not fit the context of 8"),
        "{err}"
    );
    assert_eq!(cache.pos, 0);
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
