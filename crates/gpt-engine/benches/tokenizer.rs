//! Encode throughput of the o200k_harmony tokenizer vs tiktoken-rs's o200k_base
//! on the same ~1 MB of mixed-script text (the tokenizer fixture corpus, repeated).
//!
//! `cargo bench -p gpt-engine --bench tokenizer`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpt_engine::tokenizer::Tokenizer;

fn corpus() -> String {
    let path = format!(
        "{}/tests/fixtures/tokenizer_o200k.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let json: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    let mut lines: Vec<String> = json["ordinary"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["text"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if lines.is_empty() {
        lines.push("The quick brown fox jumps over the lazy dog. ".to_string());
    }
    let mut text = String::with_capacity(1 << 20);
    let mut i = 0;
    while text.len() < 1 << 20 {
        text.push_str(&lines[i % lines.len()]);
        text.push('\n');
        i += 1;
    }
    text
}

/// ~1 MB of pseudo-random words (xorshift over a letter/number/punctuation
/// alphabet): few repeated pieces, so the encoder's piece cache rarely helps.
fn unique_text() -> String {
    const ALPHA: &[&str] = &[
        "a", "e", "i", "o", "u", "n", "s", "t", "r", "l", "k", "z", "é", "ж", "λ", "中", "😀", "7",
        "42", ".", ",", "'s", "-", "(", ")", "\n", "  ", "\t",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut text = String::with_capacity(1 << 20);
    while text.len() < 1 << 20 {
        for _ in 0..(2 + next() % 9) {
            text.push_str(ALPHA[(next() % ALPHA.len() as u64) as usize]);
        }
        text.push(' ');
    }
    text
}

fn bench_encode(c: &mut Criterion) {
    for (name, text) in [
        ("encode_1MB_corpus", corpus()),
        ("encode_1MB_unique", unique_text()),
    ] {
        bench_text(c, name, &text);
    }
}

fn bench_text(c: &mut Criterion, name: &str, text: &str) {
    let ours = match Tokenizer::o200k_harmony() {
        Ok(t) => t,
        Err(e) => panic!("building o200k_harmony: {e}"),
    };
    let reference = tiktoken_rs::o200k_base_singleton();
    assert_eq!(
        ours.encode(text, false).ok(),
        Some(reference.encode_ordinary(text)),
        "bench text must tokenize identically"
    );
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("gpt_engine", |b| {
        b.iter(|| ours.encode(black_box(text), false).map(|v| v.len()))
    });
    g.bench_function("tiktoken_rs", |b| {
        b.iter(|| reference.encode_ordinary(black_box(text)).len())
    });
    g.finish();
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
