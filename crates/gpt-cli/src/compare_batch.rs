//! `gptoss compare-batch`: sequences decoded inside one batch against the same sequences run
//! alone, on one device: each watched sequence's logits at every step (relative L2) and its
//! greedy tokens. The batch is staggered — sequences join a few steps apart, so most steps mix
//! prompt chunks with one-token decodes — and its prompts have ragged lengths.

use anyhow::{Context, Result};
use gpt_engine::batch::{Batch, Logits};
use gpt_engine::kv::{KvPool, KvPoolConfig, SeqId};
use gpt_engine::loader::{load_any, LoadConfig};
use gpt_engine::model::{GptOss, ModelOptions};
use gpt_engine::sampling::argmax;

use crate::compare::rel_l2;
use crate::model_source;
use crate::tools::{dense_mode, device};

/// `gptoss compare-batch`.
#[derive(clap::Args, Debug)]
pub struct CompareBatchArgs {
    /// Model: a GGUF path, `tiny`, or a Hugging Face repo id.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Device.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Sequences in the batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Greedy tokens each sequence generates.
    #[arg(long, default_value_t = 64)]
    pub steps: usize,
    /// Longest prompt (prompts take ragged lengths up to this).
    #[arg(long, default_value_t = 40)]
    pub prompt_tokens: usize,
    /// Sequences compared with their run alone: the first, the last, and evenly spaced ones.
    #[arg(long, default_value_t = 3)]
    pub watch: usize,
    /// Largest relative L2 of a watched sequence's logits accepted.
    #[arg(long, default_value_t = 1e-3)]
    pub max_rel_l2: f64,
    /// Run the generic path on the device instead of the fast kernels.
    #[arg(long)]
    pub no_fast_decode: bool,
    /// On a GPU, keep the MoE blocks (router, experts) of the first N layers in host memory
    /// and run them on the CPU (llama.cpp's `--n-cpu-moe`); `inspect --check --vram SIZE`
    /// suggests the N that fits a card.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub cpu_moe: usize,
    /// Time the batch's forward stages (synchronizing between them) and print them per step.
    #[arg(long)]
    pub profile: bool,
    /// MoE layers of at least this many slots run grouped GEMMs (default: the engine's).
    #[arg(long)]
    pub moe_grouped_min_slots: Option<usize>,
}

/// One sequence alone: the logits after its prompt and after each of its greedy tokens.
fn alone(m: &GptOss, prompt: &[u32], steps: usize) -> Result<(Vec<Vec<f32>>, Vec<u32>)> {
    let mut cache = m.new_cache(prompt.len() + steps + 1, prompt.len())?;
    let mut l: Vec<f32> = m
        .forward_seq(prompt, &mut cache, Logits::Last)?
        .flatten_all()?
        .to_device(&candle_core::Device::Cpu)?
        .to_vec1()?;
    let (mut logits, mut toks) = (Vec::with_capacity(steps), Vec::with_capacity(steps));
    for _ in 0..steps {
        let t = argmax(&l);
        logits.push(l);
        toks.push(t);
        l = m
            .forward_seq(&[t], &mut cache, Logits::Last)?
            .flatten_all()?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec1()?;
    }
    Ok((logits, toks))
}

/// Runs the batch and the watched sequences alone, and compares.
pub fn compare_batch(a: &CompareBatchArgs) -> Result<()> {
    use rand::{Rng, SeedableRng};
    anyhow::ensure!(
        a.batch > 0 && a.steps > 0 && a.prompt_tokens > 0,
        "--batch, --steps and --prompt-tokens must be at least 1"
    );
    let path = model_source::resolve(&a.model)?;
    let dev = device(&a.device)?;
    let cfg = LoadConfig {
        ctx: a.prompt_tokens + a.steps + 1,
        chunk: a.prompt_tokens,
        dense: dense_mode(&dev),
        model: ModelOptions {
            no_fast_decode: a.no_fast_decode,
            profile: a.profile,
            moe_grouped_min_slots: a.moe_grouped_min_slots,
            ..Default::default()
        },
        seqs: a.batch,
        cpu_moe: a.cpu_moe,
    };
    let (m, _) = load_any(&path, &dev, &cfg, None)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let prompts: Vec<Vec<u32>> = (0..a.batch)
        .map(|i| {
            let n = 1 + (i * 7 + 3) % a.prompt_tokens;
            (0..n).map(|_| rng.random_range(0..199_998u32)).collect()
        })
        .collect();
    let n_watch = a.watch.clamp(1, a.batch);
    let watched: Vec<usize> = (0..n_watch)
        .map(|w| {
            if n_watch == 1 {
                0
            } else {
                w * (a.batch - 1) / (n_watch - 1)
            }
        })
        .collect();
    let bs = gpt_engine::kv::DEFAULT_BLOCK_SIZE;
    let per_seq = (a.prompt_tokens + a.steps + 1).div_ceil(bs) + 2;
    let mut pool = KvPool::new(
        m.config(),
        m.device(),
        KvPoolConfig {
            block_size: bs,
            full_blocks: a.batch * per_seq,
            sliding_blocks: a.batch * per_seq,
            prefix_cache: false,
            kv_type: m.kv_type(),
        },
    )?;
    let ids: Vec<SeqId> = (0..a.batch).map(|_| pool.add_sequence(&[])).collect();
    // Sequence i joins at step i % 4; its logits and tokens, step by step.
    let mut logits: Vec<Vec<Vec<f32>>> = vec![Vec::new(); a.batch];
    let mut toks: Vec<Vec<u32>> = vec![Vec::new(); a.batch];
    let mut step = 0usize;
    let mut decode_ms: Vec<f64> = Vec::new();
    let t0 = std::time::Instant::now();
    while toks.iter().any(|t| t.len() < a.steps) {
        let mut b = Batch::new();
        let mut order = Vec::new();
        for i in 0..a.batch {
            if step < i % 4 || toks[i].len() == a.steps {
                continue;
            }
            let input: Vec<u32> = match logits[i].last() {
                None => prompts[i].clone(),
                Some(_) => vec![*toks[i].last().context("a token")?],
            };
            b.push(ids[i], &input, Logits::Last)?;
            order.push(i);
        }
        let all_decode = order.iter().all(|&i| !logits[i].is_empty());
        let ts = std::time::Instant::now();
        let out: Vec<Vec<f32>> = m
            .forward(&b, &mut pool)?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec2()?;
        if all_decode && order.len() == a.batch {
            decode_ms.push(ts.elapsed().as_secs_f64() * 1e3);
        }
        for (i, l) in order.into_iter().zip(out) {
            toks[i].push(argmax(&l));
            logits[i].push(l);
        }
        step += 1;
    }
    let batch_s = t0.elapsed().as_secs_f64();
    let profile: serde_json::Map<String, serde_json::Value> = m
        .take_profile()
        .into_iter()
        .map(|(s, d)| {
            (
                format!("{s:?}"),
                (d.as_secs_f64() * 1e3 / step as f64).into(),
            )
        })
        .collect();
    decode_ms.sort_by(f64::total_cmp);
    let decode_step_ms = decode_ms.get(decode_ms.len() / 2).copied();
    let mut worst = 0f64;
    let mut agree = usize::MAX;
    for &i in &watched {
        let (al, at) = alone(&m, &prompts[i], a.steps)?;
        let same = at.iter().zip(&toks[i]).take_while(|(x, y)| x == y).count();
        agree = agree.min(same);
        // Logits are comparable while both runs saw the same tokens.
        for (g, w) in logits[i].iter().zip(&al).take(same + 1) {
            worst = worst.max(rel_l2(g, w));
        }
    }
    println!(
        "{}",
        serde_json::json!({"device": a.device, "batch": a.batch, "steps": a.steps,
            "watched": watched, "worst_rel_l2": worst, "greedy_agree": agree,
            "forward_steps": step, "batch_seconds": batch_s,
            "decode_step_ms_median": decode_step_ms,
            "profile_ms_per_step": if a.profile { serde_json::Value::Object(profile) } else { serde_json::Value::Null }})
    );
    anyhow::ensure!(
        worst <= a.max_rel_l2,
        "a sequence's logits inside the batch differ from its run alone: relative L2 {worst:.3e} > {}",
        a.max_rel_l2
    );
    anyhow::ensure!(
        agree == a.steps,
        "greedy tokens inside the batch diverge from the run alone after {agree} of {} steps",
        a.steps
    );
    eprintln!(
        "ok: {} sequences in one batch on {}: worst relative L2 {worst:.3e}, {agree}/{} greedy tokens equal",
        a.batch, a.device, a.steps
    );
    Ok(())
}
