//! Shared helpers of the engine's integration tests: the generated tiny model, .npy reading,
//! error measures.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::Device;
use gpt_engine::loader::{load_model, LoadConfig};
use gpt_engine::model::rope::YarnRounding;
use gpt_engine::model::{GptOss, ModelOptions};
use gpt_engine::synth::{self, SynthSpec};

/// Generates (once per test binary) the tiny model, or its F32 twin, and returns its path.
pub fn tiny_path(f32_values: bool) -> PathBuf {
    static Q: OnceLock<PathBuf> = OnceLock::new();
    static F: OnceLock<PathBuf> = OnceLock::new();
    let cell = if f32_values { &F } else { &Q };
    cell.get_or_init(|| {
        let dir =
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tiny-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(if f32_values {
            "tiny-f32.gguf"
        } else {
            "tiny.gguf"
        });
        let mut spec = SynthSpec::tiny();
        spec.f32_values = f32_values;
        let vocab = gpt_engine::tokenizer::o200k_harmony_vocab().unwrap();
        synth::write_model(&spec, &vocab, &path, |_, _| {}).unwrap();
        path
    })
    .clone()
}

/// Loads a model on the CPU.
pub fn load(path: &Path, yarn: YarnRounding) -> GptOss {
    let cfg = LoadConfig {
        model: ModelOptions {
            yarn,
            ..Default::default()
        },
        ..Default::default()
    };
    load_model(path, &Device::Cpu, &cfg, None).unwrap().0
}

/// Reads a little-endian C-order .npy of f4 or i8 (int64) as f64 values with its shape.
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY");
    let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
    let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
    assert!(
        header.contains("'fortran_order': False"),
        "{}: only C-order arrays",
        path.display()
    );
    let shape_s = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let body = &b[10 + hlen..];
    let vals = if header.contains("'<f4'") {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()
    } else if header.contains("'<i8'") {
        body.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()
    } else {
        panic!("unsupported npy dtype in {header}")
    };
    (shape, vals)
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((*x - *y) as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Index of the largest value.
pub fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |b, (i, x)| if *x > v[b] { i } else { b })
}
