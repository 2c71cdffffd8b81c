//! Tiny-model logits against references nobody here wrote: transformers' GptOssForCausalLM
//! and llama.cpp (fixtures and the scripts that made them: tests/reference/README.md).

mod common;

use std::path::PathBuf;

use common::*;
use gpt_engine::model::prefill_logits;
use gpt_engine::model::rope::YarnRounding;

/// The bar: relative L2 of the logits ≤ 1e-4 in f32, per position.
const MAX_REL_L2: f64 = 1e-4;

fn fixture(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(dir)
}

/// A fixture's tokens, the vocabulary columns it kept, and their logits `(shape, values)`.
fn read_fixture(dir: &str) -> (Vec<u32>, Vec<usize>, Vec<usize>, Vec<f64>) {
    let d = fixture(dir);
    let tokens = read_npy(&d.join("tokens.npy"))
        .1
        .iter()
        .map(|&x| x as u32)
        .collect();
    let cols = read_npy(&d.join("cols.npy"))
        .1
        .iter()
        .map(|&x| x as usize)
        .collect();
    let (shape, want) = read_npy(&d.join("logits.npy"));
    (tokens, cols, shape, want)
}

fn check_against(dir: &str, f32_twin: bool, yarn: YarnRounding) -> f64 {
    let d = fixture(dir);
    let (tokens, cols, shape, want) = read_fixture(dir);
    let argmax_want = read_npy(&d.join("argmax.npy")).1;
    let norms = read_npy(&d.join("rownorm.npy")).1;
    assert_eq!(shape, vec![tokens.len(), cols.len()]);
    let model = load(&tiny_path(f32_twin), yarn);
    let logits = prefill_logits(&model, &tokens).unwrap(); // (t, vocab)
    let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
    let mut worst: f64 = 0.0;
    for (t, row) in rows.iter().enumerate() {
        let ours: Vec<f32> = cols.iter().map(|&c| row[c]).collect();
        let theirs: Vec<f32> = want[t * cols.len()..(t + 1) * cols.len()]
            .iter()
            .map(|&x| x as f32)
            .collect();
        let rel = rel_l2(&ours, &theirs);
        worst = worst.max(rel);
        assert!(
            rel <= MAX_REL_L2,
            "{dir}: position {t}: relative L2 {rel:.3e} > {MAX_REL_L2:e}"
        );
        assert_eq!(
            argmax(row) as f64,
            argmax_want[t],
            "{dir}: argmax differs at position {t}"
        );
        let norm: f64 = row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!(
            (norm / norms[t] - 1.0).abs() <= MAX_REL_L2,
            "{dir}: row norm differs at {t}"
        );
    }
    worst
}

#[test]
fn tiny_logits_equal_transformers() {
    let worst = check_against("hf", false, YarnRounding::Reference);
    eprintln!("transformers: worst relative L2 {worst:.2e}");
}

#[test]
fn tiny_logits_equal_llama_cpp_with_rounded_yarn() {
    let worst = check_against("llamacpp", false, YarnRounding::LlamaCpp);
    eprintln!("llama.cpp: worst relative L2 {worst:.2e}");
}

#[test]
fn f32_twin_gives_the_same_logits() {
    // The F32 twin (what llama.cpp ran) holds exactly the quantized values.
    let worst = check_against("llamacpp", true, YarnRounding::LlamaCpp);
    eprintln!("llama.cpp vs our F32 twin: worst relative L2 {worst:.2e}");
}

#[test]
fn yarn_rounding_matters() {
    // Guard against a test that cannot fail: the reference-YaRN model must NOT match
    // llama.cpp's rounded-YaRN logits within the bar on this sequence (positions > 0 rotate
    // dims 9..17 differently).
    let (tokens, cols, _, want) = read_fixture("llamacpp");
    let model = load(&tiny_path(false), YarnRounding::Reference);
    let rows: Vec<Vec<f32>> = prefill_logits(&model, &tokens).unwrap().to_vec2().unwrap();
    let last = rows.len() - 1;
    let ours: Vec<f32> = cols.iter().map(|&c| rows[last][c]).collect();
    let theirs: Vec<f32> = want[last * cols.len()..]
        .iter()
        .map(|&x| x as f32)
        .collect();
    assert!(rel_l2(&ours, &theirs) > MAX_REL_L2);
}
