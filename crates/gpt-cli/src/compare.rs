//! `gptoss compare-devices`: the same prefill, token-by-token decode and greedy generation on
//! the CPU (exact precision) and on another device — or on the CPU again at another precision
//! — compared.

use anyhow::Result;
use candle_core::Device;
use gpt_engine::loader::{load_any, LoadConfig};
use gpt_engine::model::probe::RouterGap;
use gpt_engine::model::{prefill_logits, GptOss, Logits, ModelOptions};

use crate::model_source;
use crate::tools::{dense_mode, device};

/// `gptoss compare-devices`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// Model: a GGUF path, `tiny`, or a Hugging Face repo id.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Device checked against the CPU.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Prompt tokens of the prefill comparison.
    #[arg(long, default_value_t = 40)]
    pub prompt_tokens: usize,
    /// Greedy steps whose tokens must agree.
    #[arg(long, default_value_t = 64)]
    pub steps: usize,
    /// Tokens decoded one at a time on the device (the fused decode path on CUDA), whose
    /// logits are compared with one CPU prefill of the same tokens. Over 512 covers a sliding
    /// layer's compaction and a full layer's buffer growth.
    #[arg(long, default_value_t = 600)]
    pub decode_tokens: usize,
    /// Largest relative L2 of the logits accepted.
    #[arg(long, default_value_t = 1e-2)]
    pub max_rel_l2: f64,
    /// Run the generic path on the device instead of the fused decode kernels and the
    /// tensor-core prefill.
    #[arg(long)]
    pub no_fast_decode: bool,
    /// On a GPU, keep the MoE blocks (router, experts) of the first N layers in host memory
    /// and run them on the CPU (llama.cpp's `--n-cpu-moe`); `inspect --check --vram SIZE`
    /// suggests the N that fits a card.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub cpu_moe: usize,
    /// CPU matmul precision of the compared model (`--device cpu --cpu-precision fast`
    /// measures the fast mode against the exact one).
    #[arg(long, value_enum, default_value_t)]
    pub cpu_precision: crate::tools::CpuPrecision,
    /// Element type of the KV cache (default: f16 on CUDA, f32 on the CPU).
    #[arg(long, value_enum)]
    pub kv_type: Option<crate::tools::KvTypeArg>,
}

/// Relative L2 distance of `a` from the reference `b`.
pub(crate) fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// Runs the same prefill and greedy decode on the CPU and on `--device`, and compares.
pub fn compare_devices(a: &CompareArgs) -> Result<()> {
    use rand::{Rng, SeedableRng};
    anyhow::ensure!(a.prompt_tokens > 0, "--prompt-tokens must be at least 1");
    // The greedy run starts from the first (up to) 8 prompt tokens.
    let n0 = a.prompt_tokens.min(8);
    let path = model_source::resolve(&a.model)?;
    let dev = device(&a.device)?;
    let cfg = LoadConfig {
        ctx: a.prompt_tokens.max(a.decode_tokens) + a.steps + 1,
        chunk: 512,
        ..Default::default()
    };
    // The CPU model records its routers' margins: a row over the bound whose token had a
    // near tie between its k-th and (k+1)-th expert is an expert flip, not a wrong kernel.
    let probe_cfg = LoadConfig {
        model: ModelOptions {
            probe_router: true,
            ..Default::default()
        },
        ..cfg.clone()
    };
    let (cpu, _) = load_any(&path, &Device::Cpu, &probe_cfg, None)?;
    let gcfg = LoadConfig {
        dense: dense_mode(&dev),
        model: ModelOptions {
            no_fast_decode: a.no_fast_decode,
            cpu_precision: a.cpu_precision.into(),
            kv_type: a.kv_type.map(Into::into),
            ..Default::default()
        },
        cpu_moe: a.cpu_moe,
        ..cfg.clone()
    };
    let (gpu, _) = load_any(&path, &dev, &gcfg, None)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let prompt: Vec<u32> = (0..a.prompt_tokens)
        .map(|_| rng.random_range(0..199_998u32))
        .collect();
    let lc: Vec<Vec<f32>> = prefill_logits(&cpu, &prompt)?.to_vec2()?;
    let n_layer = cpu.config().n_layer;
    let gaps = by_layer(cpu.take_router_gaps(), n_layer); // [layer][row]
    let lg: Vec<Vec<f32>> = prefill_logits(&gpu, &prompt)?
        .to_device(&Device::Cpu)?
        .to_vec2()?;
    let rows: Vec<f64> = lc.iter().zip(&lg).map(|(c, g)| rel_l2(g, c)).collect();
    let worst = rows.iter().copied().fold(0.0, f64::max);
    // One token whose expert choice flipped at a near tie differs as a whole; count them.
    let rows_over = rows.iter().filter(|&&r| r > a.max_rel_l2).count();
    let v = RowVerdict::of(&rows, &gaps, a.max_rel_l2);
    // Token-by-token decode on the device against one CPU prefill of the same tokens.
    let dtoks: Vec<u32> = (0..a.decode_tokens)
        .map(|_| rng.random_range(0..199_998u32))
        .collect();
    let mut decode_rows = Vec::with_capacity(dtoks.len());
    let mut dgaps = vec![];
    if !dtoks.is_empty() {
        let mut cache = gpu.new_cache(dtoks.len(), 1)?;
        let lcd = prefill_logits(&cpu, &dtoks)?; // (t, vocab)
        dgaps = by_layer(cpu.take_router_gaps(), n_layer);
        for (i, &t) in dtoks.iter().enumerate() {
            let g: Vec<f32> = gpu
                .forward_seq(&[t], &mut cache, Logits::Last)?
                .flatten_all()?
                .to_device(&Device::Cpu)?
                .to_vec1()?;
            let c: Vec<f32> = lcd.get(i)?.to_vec1()?;
            decode_rows.push(rel_l2(&g, &c));
        }
    }
    let dv = RowVerdict::of(&decode_rows, &dgaps, a.max_rel_l2);
    let decode_worst = decode_rows.iter().copied().fold(0.0, f64::max);
    // Greedy: the prompt in one forward, then one token at a time, both models in lockstep.
    let greedy = Greedy::run(&cpu, &gpu, &prompt[..n0], a.steps, a.max_rel_l2)?;
    println!(
        "{}",
        serde_json::json!({"device": a.device, "fast_decode": gpu.fast_decode(),
            "prefill_tokens": a.prompt_tokens, "worst_rel_l2": worst,
            "prefill_rows_over_bound": rows_over,
            "rows_over_bound": v.over.iter().map(RowOver::json).collect::<Vec<_>>(),
            "router_margin_median": v.margin_median,
            "prefill_median_rel_l2": v.median_row,
            "decode_tokens": a.decode_tokens, "decode_worst_rel_l2": decode_worst,
            "decode_rows_over_bound": dv.over.iter().map(RowOver::json).collect::<Vec<_>>(),
            "greedy_steps": a.steps, "greedy_compared": greedy.compared,
            "greedy_agree": greedy.equal,
            "greedy_ties": greedy.ties.iter().map(|(i, d)| d.json(*i)).collect::<Vec<_>>(),
            "divergence": greedy.differ.as_ref().map(|(i, d)| d.json(*i))})
    );
    anyhow::ensure!(
        v.worst_other <= a.max_rel_l2,
        "logits differ: relative L2 {:.3e} > {} ({} rows over the bound, {} of them at a router \
         near tie or after one)",
        v.worst_other,
        a.max_rel_l2,
        v.over.len(),
        v.over.iter().filter(|o| o.explained()).count()
    );
    for (what, verdict) in [("prefill", &v), ("decode", &dv)] {
        for o in &verdict.over {
            if o.near_tie {
                eprintln!(
                    "near tie: {what} row {} differs by {:.3e}, an expert flip: its router's k-th \
                     and (k+1)-th logits are {:.3e} apart on the CPU (median row {:.3e})",
                    o.row, o.rel_l2, o.margin, verdict.margin_median
                );
            } else if let Some(t) = o.after_tie {
                eprintln!(
                    "near tie: {what} row {} differs by {:.3e} (router margin {:.3e}), less than \
                     the flip at row {t} whose keys and values it attends to",
                    o.row, o.rel_l2, o.margin
                );
            }
        }
    }
    anyhow::ensure!(
        dv.worst_other <= a.max_rel_l2,
        "decode logits differ: relative L2 {:.3e} > {} ({} rows over the bound, {} of them at a \
         router near tie or after one)",
        dv.worst_other,
        a.max_rel_l2,
        dv.over.len(),
        dv.over.iter().filter(|o| o.explained()).count()
    );
    for (i, d) in &greedy.ties {
        eprintln!(
            "near tie: greedy tokens differ at step {i}, where the CPU's top two logits ({} vs \
             {}) differ by {:.3e}, within twice the devices' logit difference {:.3e}; both go on \
             with the CPU's token",
            d.cpu_token, d.device_token, d.cpu_margin, d.logit_diff
        );
    }
    if let Some((i, d)) = &greedy.differ {
        anyhow::bail!(
            "greedy tokens diverge at step {i}: the CPU's token {} leads the device's {} by \
             {:.3e} (the devices' logit difference there {:.3e}, their rows {:.3e} apart in \
             relative L2): not a tie within the bound {}",
            d.cpu_token,
            d.device_token,
            d.cpu_margin,
            d.logit_diff,
            d.rel_l2,
            a.max_rel_l2
        );
    }
    anyhow::ensure!(
        greedy.ties.len() * 20 <= a.steps,
        "greedy tokens differ at {} near ties in {} steps (more than one in 20)",
        greedy.ties.len(),
        a.steps
    );
    eprintln!(
        "ok: {} vs cpu: worst relative L2 {:.3e} (prefill{}), {:.3e} (decode{}), {}/{} greedy tokens equal{}",
        a.device,
        v.worst_other,
        if v.over.is_empty() { "" } else { ", rows at near ties aside" },
        dv.worst_other,
        if dv.over.is_empty() { "" } else { ", rows at near ties aside" },
        greedy.equal,
        a.steps,
        if greedy.ties.is_empty() { "" } else { ", the others at near ties" }
    );
    Ok(())
}

/// The probe's runs (one per MoE layer per forward, in order) as `[layer][row]` over all the
/// forwards: a prefill longer than a chunk runs every layer once per chunk.
fn by_layer(runs: Vec<Vec<RouterGap>>, n_layer: usize) -> Vec<Vec<RouterGap>> {
    let mut out: Vec<Vec<RouterGap>> = vec![Vec::new(); n_layer];
    for (i, run) in runs.into_iter().enumerate() {
        if let Some(l) = out.get_mut(i % n_layer.max(1)) {
            l.extend(run);
        }
    }
    out
}

/// A row over the bound (prefill or token-by-token decode).
struct RowOver {
    row: usize,
    rel_l2: f64,
    /// Its smallest router margin over the layers (CPU).
    margin: f32,
    /// Whether some layer's margin is within the devices' difference (see [`RowVerdict`]).
    near_tie: bool,
    /// An earlier near-tie row that differs more than this one (its keys and values, computed
    /// with the other expert, feed this row's attention).
    after_tie: Option<usize>,
}

impl RowOver {
    /// A flip itself or its echo in a later row.
    fn explained(&self) -> bool {
        self.near_tie || self.after_tie.is_some()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"row": self.row, "rel_l2": self.rel_l2,
            "router_margin": self.margin, "near_tie": self.near_tie,
            "after_tie": self.after_tie})
    }
}

/// The rows (of a prefill, or of the token-by-token decode against one CPU prefill) against the
/// bound, with the CPU's router gaps `[layer][row]`. A row over
/// the bound is an expert flip at a near tie when, at some layer, its router's margin is within
/// what the devices' difference moves router logits by: the typical row's relative difference
/// (the median) times the token's logit scale, with a factor of 8 to spare. A flipped token's
/// keys and values then differ in the later layers, and later rows attend to them: a later row
/// over the bound that differs less than an earlier flip is that flip's echo. Flips and echoes
/// are set aside only if they are all the rows over the bound and at most one in 20 (more would
/// be a wrong kernel, whatever the margins).
struct RowVerdict {
    over: Vec<RowOver>,
    median_row: f64,
    margin_median: f64,
    /// The worst row once flips are set aside (the worst row when they are not).
    worst_other: f64,
}

impl RowVerdict {
    fn of(rows: &[f64], gaps: &[Vec<RouterGap>], bound: f64) -> Self {
        let median_row = crate::bench::median(rows.to_vec());
        // Each row's smallest margin over the layers, and whether some layer's is a near tie.
        let ties: Vec<(f32, bool)> = (0..rows.len())
            .map(|i| {
                let at = |g: &RouterGap| (g.margin, g.margin <= 8.0 * median_row as f32 * g.scale);
                gaps.iter()
                    .filter_map(|l| l.get(i).map(at))
                    .fold((f32::INFINITY, false), |(m, t), (gm, gt)| {
                        (m.min(gm), t || gt)
                    })
            })
            .collect();
        let mut over: Vec<RowOver> = (0..rows.len())
            .filter(|&i| rows[i] > bound)
            .map(|i| RowOver {
                row: i,
                rel_l2: rows[i],
                margin: ties[i].0,
                near_tie: ties[i].1,
                after_tie: None,
            })
            .collect();
        for j in 0..over.len() {
            if !over[j].near_tie {
                over[j].after_tie = over[..j]
                    .iter()
                    .filter(|o| o.near_tie && o.rel_l2 > over[j].rel_l2)
                    .map(|o| o.row)
                    .next_back();
            }
        }
        let flips = over.iter().all(RowOver::explained) && over.len() * 20 <= rows.len();
        let worst_other = (0..rows.len())
            .filter(|i| !(flips && over.iter().any(|o| o.row == *i)))
            .map(|i| rows[i])
            .fold(0.0, f64::max);
        let margins: Vec<f64> = ties.iter().map(|t| f64::from(t.0)).collect();
        Self {
            over,
            median_row,
            margin_median: crate::bench::median(margins),
            worst_other,
        }
    }
}

/// Greedy decoding on the CPU and the device in lockstep from the same prompt: at each step
/// both models see the same tokens so far. A step whose argmaxes differ at a near tie of the
/// CPU's logits is recorded and both go on with the CPU's token; any other difference ends the
/// run.
struct Greedy {
    /// Steps run (all of them unless a real difference ended the run).
    compared: usize,
    /// Steps whose tokens were equal.
    equal: usize,
    /// Steps whose tokens differed at a near tie, and how.
    ties: Vec<(usize, Divergence)>,
    /// The step whose tokens differed beyond a tie, if any.
    differ: Option<(usize, Divergence)>,
}

impl Greedy {
    fn run(cpu: &GptOss, dev: &GptOss, prompt: &[u32], steps: usize, bound: f64) -> Result<Self> {
        let mut g = Greedy {
            compared: 0,
            equal: 0,
            ties: vec![],
            differ: None,
        };
        let (mut cc, mut dc) = (
            cpu.new_cache(prompt.len() + steps + 1, prompt.len())?,
            dev.new_cache(prompt.len() + steps + 1, prompt.len())?,
        );
        let row = |m: &GptOss, toks: &[u32], cache: &mut _| -> Result<Vec<f32>> {
            Ok(m.forward_seq(toks, cache, Logits::Last)?
                .flatten_all()?
                .to_device(&Device::Cpu)?
                .to_vec1()?)
        };
        let (mut c, mut d) = (row(cpu, prompt, &mut cc)?, row(dev, prompt, &mut dc)?);
        for i in 0..steps {
            g.compared += 1;
            let t = match Divergence::at(&c, &d) {
                None => {
                    g.equal += 1;
                    argmax(&c)
                }
                Some(div) if div.near_tie(bound) => {
                    let t = div.cpu_token;
                    g.ties.push((i, div));
                    t
                }
                Some(div) => {
                    g.differ = Some((i, div));
                    break;
                }
            };
            (c, d) = (row(cpu, &[t], &mut cc)?, row(dev, &[t], &mut dc)?);
        }
        Ok(g)
    }
}

/// Index of the largest value (the first of equals, as Candle's argmax).
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// A step where greedy decoding on the two devices picks different tokens.
struct Divergence {
    cpu_token: u32,
    device_token: u32,
    /// CPU logit of its token minus its logit of the device's token.
    cpu_margin: f32,
    /// Largest |CPU − device| logit difference at those two tokens.
    logit_diff: f32,
    /// Relative L2 of the device's whole row of logits from the CPU's.
    rel_l2: f64,
}

impl Divergence {
    /// The CPU's (`c`) and the device's (`d`) logits of one step: `None` where their argmaxes
    /// agree.
    fn at(c: &[f32], d: &[f32]) -> Option<Self> {
        let (ct, dt) = (argmax(c), argmax(d));
        let (i, j) = (ct as usize, dt as usize);
        (ct != dt).then(|| Divergence {
            cpu_token: ct,
            device_token: dt,
            cpu_margin: c[i] - c[j],
            logit_diff: (c[i] - d[i]).abs().max((c[j] - d[j]).abs()),
            rel_l2: rel_l2(d, c),
        })
    }

    /// The rows agree within `bound` as a whole and the devices disagree at the two tokens by
    /// more than half the CPU's gap: a tie within the path's precision, not a wrong result.
    fn near_tie(&self, bound: f64) -> bool {
        self.rel_l2 <= bound && self.cpu_margin <= 2.0 * self.logit_diff
    }

    fn json(&self, step: usize) -> serde_json::Value {
        serde_json::json!({"step": step, "cpu_token": self.cpu_token,
            "device_token": self.device_token, "cpu_margin": self.cpu_margin,
            "logit_diff": self.logit_diff, "rel_l2": self.rel_l2})
    }
}

#[cfg(test)]
mod tests {
    use super::{argmax, by_layer, Divergence, RouterGap, RowVerdict};

    fn d(cpu_margin: f32, logit_diff: f32) -> Divergence {
        Divergence {
            cpu_token: 1,
            device_token: 2,
            cpu_margin,
            logit_diff,
            rel_l2: 1e-3,
        }
    }

    /// One row over the bound whose router nearly tied is set aside; one whose margins are
    /// ordinary is not; nor are tie rows once they are more than one in 20.
    #[test]
    fn prefill_rows_over_the_bound_pass_only_as_rare_router_ties() {
        let g = |margin, scale| RouterGap { margin, scale };
        let mut rows = vec![3e-4; 40];
        rows[7] = 0.2;
        // Layer 0 ordinary for every row; layer 1 ties row 7 (1e-4 <= 8 · 3e-4 · 1).
        let ordinary = vec![g(0.05, 1.0); 40];
        let mut tied = ordinary.clone();
        tied[7] = g(1e-4, 1.0);
        let v = RowVerdict::of(&rows, &[ordinary.clone(), tied.clone()], 1e-2);
        assert_eq!(
            (v.over.len(), v.over[0].row, v.over[0].near_tie),
            (1, 7, true)
        );
        assert_eq!(v.worst_other, 3e-4);
        assert_eq!(v.over[0].margin, 1e-4);
        // The same row with ordinary margins at every layer: a failure.
        let v = RowVerdict::of(&rows, &[ordinary.clone(), ordinary.clone()], 1e-2);
        assert!(!v.over[0].near_tie);
        assert_eq!(v.worst_other, 0.2);
        // Three tie rows in 40 (> 1 in 20): a failure too.
        for i in [3, 20] {
            rows[i] = 0.3;
            tied[i] = g(1e-5, 1.0);
        }
        let v = RowVerdict::of(&rows, &[ordinary.clone(), tied], 1e-2);
        assert!(v.over.iter().all(|o| o.near_tie));
        assert_eq!(v.worst_other, 0.3);
    }

    /// A row with ordinary margins over the bound after a flip, differing less than it, is the
    /// flip's echo; one differing more, or before the flip, is not.
    #[test]
    fn a_smaller_difference_after_a_flip_is_its_echo() {
        let g = |margin| RouterGap { margin, scale: 1.0 };
        let mut tied = vec![g(0.05); 60];
        tied[30] = g(1e-4);
        let verdict = |extra: (usize, f64)| {
            let mut rows = vec![3e-4; 60];
            rows[30] = 0.5;
            rows[extra.0] = extra.1;
            RowVerdict::of(&rows, std::slice::from_ref(&tied), 1e-2)
        };
        let v = verdict((32, 0.02));
        assert_eq!(v.over[1].after_tie, Some(30));
        assert_eq!(v.worst_other, 3e-4);
        let v = verdict((32, 0.6));
        assert_eq!((v.over[1].after_tie, v.worst_other), (None, 0.6));
        let v = verdict((10, 0.02));
        assert_eq!((v.over[0].after_tie, v.worst_other), (None, 0.5));
    }

    /// Two chunks of a 2-layer model: runs (chunk 0 layer 0, chunk 0 layer 1, chunk 1 layer 0,
    /// chunk 1 layer 1) become each layer's rows in order.
    #[test]
    fn probe_runs_join_by_layer_across_chunks() {
        let g = |m: f32| RouterGap {
            margin: m,
            scale: 1.0,
        };
        let runs = vec![
            vec![g(1.0), g(2.0)],
            vec![g(10.0), g(20.0)],
            vec![g(3.0)],
            vec![g(30.0)],
        ];
        let l = by_layer(runs, 2);
        let m = |v: &Vec<RouterGap>| v.iter().map(|x| x.margin).collect::<Vec<_>>();
        assert_eq!(m(&l[0]), vec![1.0, 2.0, 3.0]);
        assert_eq!(m(&l[1]), vec![10.0, 20.0, 30.0]);
    }

    #[test]
    fn a_near_tie_is_a_gap_within_twice_the_devices_difference() {
        assert!(d(0.5, 0.3).near_tie(1e-2));
        assert!(d(0.0, 0.0).near_tie(1e-2), "an exact tie");
        assert!(!d(0.5, 0.3).near_tie(1e-4), "rows apart beyond the bound");
        assert!(!d(1.0, 0.3).near_tie(1e-2), "a real disagreement");
        assert!(!d(1e-3, 0.0).near_tie(1e-2), "devices agree, tokens differ");
    }

    /// A step's verdict from the two rows of logits: agreement, a tie within the devices'
    /// difference, or a real difference.
    #[test]
    fn a_step_differs_only_where_the_argmaxes_do() {
        let c = [0.1, 2.0, 1.99, -1.0];
        assert!(Divergence::at(&c, &[0.1, 2.001, 1.98, -1.0]).is_none());
        let tie = Divergence::at(&c, &[0.1, 1.995, 1.999, -1.0]).unwrap();
        assert_eq!((tie.cpu_token, tie.device_token), (1, 2));
        assert!((tie.cpu_margin - 0.01).abs() < 1e-6 && (tie.logit_diff - 0.009).abs() < 1e-6);
        assert!(tie.near_tie(1e-2));
        let wrong = Divergence::at(&c, &[3.0, 2.0, 1.99, -1.0]).unwrap();
        assert_eq!((wrong.cpu_token, wrong.device_token), (1, 0));
        assert!(!wrong.near_tie(1e-2), "the rows differ as a whole");
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1, "the first of equals");
    }
}
