//! `gptoss bench --concurrency N[,M,...]`: N requests submitted to the engine at once, like
//! llama-batched-bench: prefill and aggregate decode throughput, time to first token.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use gpt_engine::engine::{Engine, EngineOptions, Event, FinishReason, Request};
use gpt_engine::model::ModelOptions;
use gpt_engine::sampling::SamplingParams;
use rand::{Rng, SeedableRng};

use crate::bench::{dense, median, peak_rss, vram_used, BenchArgs};
use crate::model_source;
use crate::tools::device;

/// When each of a request's tokens arrived.
struct Timeline {
    first: Option<Instant>,
    tokens: Vec<Instant>,
    finish: Option<FinishReason>,
}

/// One level's figures.
struct Level {
    prefill_tok_s: f64,
    decode_tok_s: f64,
    ttft_ms: Vec<f64>,
    wall_s: f64,
}

fn run_level(engine: &Engine, a: &BenchArgs, n: usize, seed: u64) -> Result<Level> {
    let vocab = engine.config().vocab_size.unwrap_or(200_000).min(199_998) as u32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let prompt: Vec<u32> = (0..a.prompt_tokens.max(1))
            .map(|_| rng.random_range(0..vocab))
            .collect();
        let mut r = Request::new(prompt, a.gen_tokens.max(1));
        r.sampling = SamplingParams::greedy();
        handles.push(engine.submit(r).context("submitting a bench request")?);
    }
    // One reader thread per request, so every arrival is timed as it happens.
    let readers: Vec<_> = handles
        .into_iter()
        .map(|mut h| {
            std::thread::spawn(move || {
                let mut t = Timeline {
                    first: None,
                    tokens: Vec::new(),
                    finish: None,
                };
                while let Some(e) = h.blocking_next() {
                    match e {
                        Event::Token(_) => {
                            let now = Instant::now();
                            t.first.get_or_insert(now);
                            t.tokens.push(now);
                        }
                        Event::Finished { reason, .. } => t.finish = Some(reason),
                        _ => {}
                    }
                }
                t
            })
        })
        .collect();
    let mut lines = Vec::with_capacity(n);
    for r in readers {
        lines.push(r.join().map_err(|_| anyhow::anyhow!("a reader panicked"))?);
    }
    let end = Instant::now();
    for l in &lines {
        if let Some(FinishReason::Error(e)) = &l.finish {
            anyhow::bail!("a bench request failed: {e}");
        }
    }
    let firsts: Vec<Instant> = lines.iter().filter_map(|l| l.first).collect();
    let all_first = firsts.iter().max().copied().unwrap_or(end);
    let prefill_s = (all_first - start).as_secs_f64();
    // Decode: tokens that arrived after every request had its first, over that window.
    let after: usize = lines
        .iter()
        .map(|l| l.tokens.iter().filter(|&&t| t > all_first).count())
        .sum();
    let window = (end - all_first).max(Duration::from_nanos(1)).as_secs_f64();
    Ok(Level {
        prefill_tok_s: (n * a.prompt_tokens) as f64 / prefill_s.max(1e-9),
        decode_tok_s: after as f64 / window,
        ttft_ms: firsts
            .iter()
            .map(|f| (*f - start).as_secs_f64() * 1e3)
            .collect(),
        wall_s: (end - start).as_secs_f64(),
    })
}

/// Runs each concurrency level on one engine.
pub fn bench_concurrency(a: &BenchArgs) -> Result<()> {
    let path = model_source::resolve(&a.model)?;
    let dev = device(&a.device)?;
    let max_n = a.concurrency.iter().copied().max().unwrap_or(1).max(1);
    let ctx = a.prompt_tokens + a.gen_tokens + 1;
    let opts = EngineOptions {
        dense: Some(dense(a, &dev)),
        device: dev.clone(),
        ctx: Some(ctx),
        max_seqs: max_n,
        max_batch_tokens: a.chunk.max(1),
        max_queue: max_n,
        // Random prompts share nothing; the cache would only cost lookups.
        prefix_cache: false,
        model: ModelOptions {
            no_fast_decode: a.no_fast_decode,
            no_cuda_graph: a.no_cuda_graph,
            cpu_precision: a.cpu_precision.into(),
            kv_type: a.kv_type.map(Into::into),
            moe_grouped_min_slots: a.moe_grouped_min_slots,
            ..Default::default()
        },
        cpu_moe: a.cpu_moe,
        ..Default::default()
    };
    let engine = Engine::load_with_progress(&path, opts, Some(&mut model_source::load_progress()))
        .with_context(|| format!("loading {}", path.display()))?;
    // Warm-up: one short request (kernel modules load at their first launch).
    run_level(
        &engine,
        &BenchArgs {
            prompt_tokens: a.prompt_tokens.min(16),
            gen_tokens: 4,
            ..a.clone()
        },
        1,
        0,
    )?;
    for (i, &n) in a.concurrency.iter().enumerate() {
        let n = n.max(1);
        let mut levels = Vec::new();
        for rep in 0..a.reps.max(1) {
            levels.push(run_level(&engine, a, n, 1 + (i * 100 + rep) as u64)?);
        }
        let decode = median(levels.iter().map(|l| l.decode_tok_s).collect());
        let prefill = median(levels.iter().map(|l| l.prefill_tok_s).collect());
        let ttft: Vec<f64> = levels.iter().flat_map(|l| l.ttft_ms.clone()).collect();
        let ttft_mean = ttft.iter().sum::<f64>() / ttft.len().max(1) as f64;
        let out = serde_json::json!({
            "model": path.display().to_string(),
            "device": a.device,
            "concurrency": n,
            "prompt_tokens": a.prompt_tokens,
            "gen_tokens": a.gen_tokens,
            "prefill_tok_s": prefill,
            "decode_tok_s": decode,
            "decode_tok_s_per_seq": decode / n as f64,
            "ttft_ms": ttft_mean,
            "ttft_ms_median": median(ttft),
            "wall_s": median(levels.iter().map(|l| l.wall_s).collect()),
            "peak_host_rss_bytes": peak_rss(),
            "device_mem_used_bytes": vram_used(&dev),
        });
        if a.json {
            println!("{out}");
        } else {
            println!(
                "concurrency {n:>4}: prefill {prefill:>10.1} tok/s, decode {decode:>9.1} tok/s ({:.1} per sequence), TTFT {ttft_mean:.1} ms",
                decode / n as f64
            );
        }
    }
    Ok(())
}
