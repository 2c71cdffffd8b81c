//! Token sampling from one row of logits.
//!
//! Order of operations (per call):
//! 1. penalties over the last `penalty_window` history tokens: repetition
//!    penalty (CTRL/llama.cpp style: positive logits ÷ r, negative × r), then
//!    `logit -= count·frequency_penalty + presence_penalty` (OpenAI style);
//! 2. `temperature == 0` → greedy argmax (lowest id on ties);
//! 3. otherwise logits ÷ temperature, then top-k, then top-p (smallest set of
//!    most probable tokens whose renormalized mass ≥ p), then min-p (keep
//!    p ≥ min_p · p_max), then one draw from the renormalized survivors with a
//!    ChaCha20 generator seeded by `seed`.
//!
//! Every filter keeps at least the most probable token. NaN logits are never sampled.
//!
//! For a batch of rows on a device: [`argmax_rows`], and [`gumbel_argmax_rows`], which draws
//! temperature-only rows where the logits are; [`draw_plan`] says which of the three a step
//! takes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Sampling controls; the defaults disable every filter except temperature 1.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 → greedy.
    pub temperature: f32,
    /// Keep the k most probable tokens; 0 → off.
    pub top_k: usize,
    /// Nucleus mass in (0, 1]; 1 → off.
    pub top_p: f32,
    /// Relative probability floor in [0, 1); 0 → off.
    pub min_p: f32,
    /// Repetition penalty ≥ 1 (1 → off).
    pub repeat_penalty: f32,
    /// Subtracted once from every token present in the window.
    pub presence_penalty: f32,
    /// Subtracted per occurrence in the window.
    pub frequency_penalty: f32,
    /// Penalties look at the last N history tokens (0 → none).
    pub penalty_window: usize,
    /// RNG seed; `None` → a random seed.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_window: 64,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }
}

/// A stateful sampler (owns the RNG).
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha20Rng,
}

/// Applies the repetition/presence/frequency penalties in place
/// (`logits`: (vocab,), `history`: all previous ids; ids ≥ vocab are ignored).
pub fn apply_penalties(logits: &mut [f32], history: &[u32], p: &SamplingParams) {
    let no_penalty =
        p.repeat_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0;
    if no_penalty || p.penalty_window == 0 {
        return;
    }
    let window = &history[history.len().saturating_sub(p.penalty_window)..];
    let mut counts: Vec<(u32, u32)> = Vec::with_capacity(window.len());
    let mut sorted: Vec<u32> = window.to_vec();
    sorted.sort_unstable();
    for id in sorted {
        match counts.last_mut() {
            Some((last, c)) if *last == id => *c += 1,
            _ => counts.push((id, 1)),
        }
    }
    for (id, count) in counts {
        let Some(l) = logits.get_mut(id as usize) else {
            continue;
        };
        if p.repeat_penalty != 1.0 {
            *l = if *l > 0.0 {
                *l / p.repeat_penalty
            } else {
                *l * p.repeat_penalty
            };
        }
        *l -= count as f32 * p.frequency_penalty + p.presence_penalty;
    }
}

/// Values per chunk of [`argmax`]'s first pass.
const ARGMAX_CHUNK: usize = 1024;

/// Index of the largest non-NaN value (lowest index on ties; 0 if none).
///
/// Two passes that vectorize: each chunk's maximum in 16 lanes (`v > m` skips NaN), then the
/// first position of the best chunk's maximum — a 201,088-token row in tens of microseconds.
pub fn argmax(logits: &[f32]) -> u32 {
    let (mut best, mut at) = (f32::NEG_INFINITY, None);
    for (c, chunk) in logits.chunks(ARGMAX_CHUNK).enumerate() {
        let mut lanes = [f32::NEG_INFINITY; 16];
        let mut it = chunk.chunks_exact(16);
        for v16 in &mut it {
            for (m, &v) in lanes.iter_mut().zip(v16) {
                *m = if v > *m { v } else { *m };
            }
        }
        let m = it
            .remainder()
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
        if m > best || (at.is_none() && chunk.iter().any(|v| !v.is_nan())) {
            (best, at) = (m, Some(c));
        }
    }
    let Some(c) = at else { return 0 };
    let start = c * ARGMAX_CHUNK;
    let pos = logits[start..].iter().position(|&v| v == best).unwrap_or(0);
    (start + pos) as u32
}

/// The [`argmax`] of each row of `logits (rows, vocab)`: on the CPU straight from the tensor's
/// memory, rows in parallel; elsewhere on the device, with only the ids copied back.
pub fn argmax_rows(logits: &candle_core::Tensor) -> candle_core::Result<Vec<u32>> {
    use rayon::prelude::*;
    let (rows, vocab) = logits.dims2()?;
    if !logits.device().is_cpu() {
        return logits.argmax(1)?.to_vec1();
    }
    let l = logits.to_dtype(candle_core::DType::F32)?.contiguous()?;
    let (storage, layout) = l.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("argmax_rows: a CPU tensor without CPU storage");
    };
    let data = &cpu.as_slice::<f32>()?[layout.start_offset()..][..rows * vocab];
    Ok(data.par_chunks(vocab.max(1)).map(argmax).collect())
}

/// Where a step's next tokens are chosen ([`draw_plan`]).
#[derive(Debug, Clone, PartialEq)]
pub enum DrawPlan {
    /// Every row's argmax, on the logits' device.
    Argmax,
    /// [`gumbel_argmax_rows`] at these per-row temperatures (0: the argmax), on the device.
    Device(Vec<f32>),
    /// Every row copied to the host and drawn by its request's own [`Sampler`].
    Host,
}

/// The plan for a step's rows, each `None` (a request no longer live: its row is not used) or
/// its request's parameters and whether it needs the whole row besides (a guide's mask,
/// log-probs). Rows already on the host (`on_host`) are sampled there unless all are greedy; on
/// a device, a row needs the host for penalties, filters (top-k, top-p, min-p) or a seed (its
/// own reproducible generator).
pub fn draw_plan<'a>(
    rows: impl IntoIterator<Item = Option<(&'a SamplingParams, bool)>>,
    on_host: bool,
) -> DrawPlan {
    let mut temps = Vec::new();
    let mut greedy = true;
    for row in rows {
        let Some((p, needs_row)) = row else {
            temps.push(0.0);
            continue;
        };
        let penalties =
            p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0;
        if needs_row || penalties {
            return DrawPlan::Host;
        }
        let sampled = p.temperature > 0.0 && p.temperature.is_finite();
        let filtered = p.top_k > 0 || p.top_p < 1.0 || p.min_p > 0.0 || p.seed.is_some();
        if sampled && (on_host || filtered) {
            return DrawPlan::Host;
        }
        greedy &= !sampled;
        temps.push(if sampled { p.temperature } else { 0.0 });
    }
    if greedy {
        DrawPlan::Argmax
    } else {
        DrawPlan::Device(temps)
    }
}

/// One draw per row of `logits (rows, vocab)` from `softmax(row / temps[r])` by the Gumbel-max
/// trick: the argmax of `row / t + G`, `G = -ln(-ln U)` with `U` uniform per element, is
/// distributed exactly as that softmax. Everything runs on the tensor's device and only the ids
/// come back (a batched GPU step copies `rows` ids instead of `rows × vocab` logits). Rows whose
/// temperature is ≤ 0 or not finite take the plain argmax, as [`Sampler::sample`] does. The
/// draws come from the device's generator: a request that names a seed goes through its own
/// [`Sampler`] instead. `U` is kept in `[f32::MIN_POSITIVE, 1 - 2⁻²⁴]`, so `G` is finite.
pub fn gumbel_argmax_rows(
    logits: &candle_core::Tensor,
    temps: &[f32],
) -> candle_core::Result<Vec<u32>> {
    use candle_core::{DType, Tensor};
    let (rows, vocab) = logits.dims2()?;
    if temps.len() != rows {
        candle_core::bail!(
            "gumbel_argmax_rows: {} temperatures for {rows} rows",
            temps.len()
        );
    }
    let dev = logits.device();
    // Per row: scale of the logits and of the noise (1 and 0 for an argmax row).
    let (scale, noise): (Vec<f32>, Vec<f32>) = temps
        .iter()
        .map(|&t| match t > 0.0 && t.is_finite() {
            true => (1.0 / t, 1.0),
            false => (1.0, 0.0),
        })
        .unzip();
    let u = Tensor::rand(0f32, 1f32, (rows, vocab), dev)?
        .clamp(f32::MIN_POSITIVE, 1.0 - f32::EPSILON / 2.0)?;
    let g = u.log()?.neg()?.log()?.neg()?; // (rows, vocab)
    let y = logits
        .to_dtype(DType::F32)?
        .broadcast_mul(&Tensor::from_vec(scale, (rows, 1), dev)?)?
        .add(&g.broadcast_mul(&Tensor::from_vec(noise, (rows, 1), dev)?)?)?;
    argmax_rows(&y)
}

/// Descending by value, ascending by id on ties.
fn desc(a: &(u32, f32), b: &(u32, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

impl Sampler {
    /// A sampler with its RNG seeded from `params.seed` (or at random).
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(|| rand::rng().random());
        Self {
            rng: ChaCha20Rng::seed_from_u64(seed),
            params,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The distribution a non-greedy draw uses: `(id, probability)` of every
    /// surviving token (order unspecified), probabilities summing to 1.
    /// With temperature 0 it is the argmax with probability 1.
    pub fn distribution(&self, logits: &[f32], history: &[u32]) -> Vec<(u32, f32)> {
        let p = &self.params;
        let mut l = logits.to_vec();
        apply_penalties(&mut l, history, p);
        if p.temperature <= 0.0 || !p.temperature.is_finite() {
            return vec![(argmax(&l), 1.0)];
        }
        let inv_t = 1.0 / p.temperature;
        let mut cands: Vec<(u32, f32)> = l
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan() && **v != f32::NEG_INFINITY)
            .map(|(i, &v)| (i as u32, v * inv_t))
            .collect();
        if cands.is_empty() {
            return vec![(argmax(&l), 1.0)];
        }
        if p.top_k > 0 && p.top_k < cands.len() {
            cands.select_nth_unstable_by(p.top_k - 1, desc);
            cands.truncate(p.top_k);
        }
        // Unnormalized weights relative to the maximum.
        let max = cands.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        let mut w: Vec<(u32, f64)> = cands
            .iter()
            .map(|&(i, v)| (i, ((v - max) as f64).exp()))
            .collect();
        let total: f64 = w.iter().map(|c| c.1).sum();
        let desc64 = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_p < 1.0 {
            let target = (p.top_p.max(0.0) as f64) * total;
            // Sort progressively larger heads until one reaches the mass.
            let mut head = 256.min(w.len());
            loop {
                if head < w.len() {
                    w.select_nth_unstable_by(head - 1, desc64);
                }
                w[..head].sort_unstable_by(desc64);
                let mut acc = 0.0;
                let mut cut = None;
                for (j, c) in w[..head].iter().enumerate() {
                    acc += c.1;
                    if acc >= target {
                        cut = Some(j + 1);
                        break;
                    }
                }
                match cut {
                    Some(n) => {
                        w.truncate(n);
                        break;
                    }
                    None if head == w.len() => break,
                    None => head = (head * 8).min(w.len()),
                }
            }
        }
        if p.min_p > 0.0 {
            // Weights are relative to the maximum, which every filter keeps: p_max ∝ 1.
            let floor = p.min_p.min(1.0) as f64;
            w.retain(|c| c.1 >= floor);
        }
        let kept: f64 = w.iter().map(|c| c.1).sum();
        w.into_iter().map(|(i, x)| (i, (x / kept) as f32)).collect()
    }

    /// Samples the next id from `logits` (vocab,) given the ids so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let dist = self.distribution(logits, history);
        if dist.len() == 1 {
            return dist[0].0;
        }
        let r: f64 = self.rng.random();
        let mut acc = 0.0f64;
        for &(id, prob) in &dist {
            acc += prob as f64;
            if r < acc {
                return id;
            }
        }
        // Rounding left r above the last cumulative value.
        dist.last().map_or(0, |d| d.0)
    }
}
