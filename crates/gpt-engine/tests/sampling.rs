//! Sampler tests against a slow f64 reference written here (sort everything,
//! softmax, filter), on fresh random logits.

use std::collections::HashSet;

use gpt_engine::sampling::{
    apply_penalties, argmax, argmax_rows, draw_plan, gumbel_argmax_rows, DrawPlan, Sampler,
    SamplingParams,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn seeded() -> (u64, StdRng) {
    let seed: u64 = rand::rng().random();
    (seed, StdRng::seed_from_u64(seed))
}

fn random_logits(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Reference: surviving ids and their renormalized probabilities.
fn reference(logits: &[f32], p: &SamplingParams) -> Vec<(u32, f64)> {
    let t = p.temperature as f64;
    let mut v: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l as f64 / t))
        .collect();
    v.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
    if p.top_k > 0 {
        v.truncate(p.top_k);
    }
    let max = v[0].1;
    let z: f64 = v.iter().map(|c| (c.1 - max).exp()).sum();
    let mut probs: Vec<(u32, f64)> = v.iter().map(|c| (c.0, (c.1 - max).exp() / z)).collect();
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        let mut n = probs.len();
        for (j, c) in probs.iter().enumerate() {
            acc += c.1;
            if acc >= p.top_p as f64 {
                n = j + 1;
                break;
            }
        }
        probs.truncate(n);
    }
    if p.min_p > 0.0 {
        let pmax = probs[0].1;
        probs.retain(|c| c.1 >= p.min_p as f64 * pmax);
    }
    let s: f64 = probs.iter().map(|c| c.1).sum();
    probs.into_iter().map(|(i, x)| (i, x / s)).collect()
}

fn check_against_reference(params: SamplingParams, vocab: usize, draws: usize) {
    let (seed, mut rng) = seeded();
    for round in 0..20 {
        let logits = random_logits(&mut rng, vocab, 6.0);
        let want = reference(&logits, &params);
        let mut sampler = Sampler::new(SamplingParams {
            seed: Some(rng.random()),
            ..params.clone()
        });
        let mut got = sampler.distribution(&logits, &[]);
        got.sort_by_key(|c| c.0);
        let mut want_sorted = want.clone();
        want_sorted.sort_by_key(|c| c.0);
        let got_ids: Vec<u32> = got.iter().map(|c| c.0).collect();
        let want_ids: Vec<u32> = want_sorted.iter().map(|c| c.0).collect();
        assert_eq!(got_ids, want_ids, "seed {seed} round {round} {params:?}");
        for (g, w) in got.iter().zip(&want_sorted) {
            assert!(
                (g.1 as f64 - w.1).abs() < 1e-5,
                "seed {seed} round {round}: p[{}] {} vs {}",
                g.0,
                g.1,
                w.1
            );
        }
        let allowed: HashSet<u32> = want_ids.into_iter().collect();
        for _ in 0..draws {
            let id = sampler.sample(&logits, &[]);
            assert!(
                allowed.contains(&id),
                "seed {seed}: drew {id} outside the kept set"
            );
        }
    }
}

#[test]
fn top_k_never_leaves_the_k_best() {
    for k in [1, 2, 5, 40] {
        check_against_reference(
            SamplingParams {
                temperature: 1.3,
                top_k: k,
                ..SamplingParams::default()
            },
            1000,
            500,
        );
    }
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    for top_p in [0.1, 0.5, 0.9, 0.99] {
        check_against_reference(
            SamplingParams {
                temperature: 0.7,
                top_p,
                ..SamplingParams::default()
            },
            3000,
            300,
        );
    }
}

#[test]
fn min_p_drops_tokens_below_the_floor() {
    for min_p in [0.01, 0.1, 0.5] {
        check_against_reference(
            SamplingParams {
                temperature: 1.0,
                min_p,
                ..SamplingParams::default()
            },
            2000,
            300,
        );
    }
}

#[test]
fn filters_compose() {
    check_against_reference(
        SamplingParams {
            temperature: 0.8,
            top_k: 50,
            top_p: 0.8,
            min_p: 0.05,
            ..SamplingParams::default()
        },
        5000,
        300,
    );
}

#[test]
fn draw_frequencies_follow_probabilities() {
    let (seed, mut rng) = seeded();
    let logits = [1.0f32, 0.0, -1.0, 2.0];
    let params = SamplingParams {
        temperature: 1.0,
        seed: Some(rng.random()),
        ..SamplingParams::default()
    };
    let want = reference(&logits, &params);
    let mut s = Sampler::new(params);
    let n = 40_000;
    let mut counts = [0usize; 4];
    for _ in 0..n {
        counts[s.sample(&logits, &[]) as usize] += 1;
    }
    for (id, p) in want {
        let f = counts[id as usize] as f64 / n as f64;
        // 5 standard deviations of a binomial proportion.
        let tol = 5.0 * (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (f - p).abs() < tol,
            "seed {seed}: id {id} freq {f} vs p {p}"
        );
    }
}

/// The Gumbel-max draws (`gumbel_argmax_rows`, the batched GPU step's sampler) against the
/// reference softmax: 30,000 rows each at temperature 1 and 0.6 and 30,000 argmax rows
/// (temperature 0), interleaved in one call on fresh random logits with one -inf token. Each
/// id's frequency within 5 standard deviations of its probability, the -inf token never
/// drawn, the temperature-0 rows all the argmax.
#[test]
fn gumbel_rows_follow_the_softmax() -> candle_core::Result<()> {
    use candle_core::{Device, Tensor};
    let (seed, mut rng) = seeded();
    let vocab = 6;
    let mut logits = random_logits(&mut rng, vocab, 2.0);
    logits[4] = f32::NEG_INFINITY;
    let n = 90_000;
    let temps: Vec<f32> = (0..n).map(|r| [0.0, 1.0, 0.6][r % 3]).collect();
    let x = Tensor::from_vec(logits.repeat(n), (n, vocab), &Device::Cpu)?;
    let ids = gumbel_argmax_rows(&x, &temps)?;
    assert_eq!(ids.len(), n);
    let best = argmax(&logits);
    for (k, t) in [(1, 1.0f32), (2, 0.6)] {
        let mut counts = vec![0usize; vocab];
        for id in ids.iter().skip(k).step_by(3) {
            counts[*id as usize] += 1;
        }
        let m = n / 3;
        let params = SamplingParams {
            temperature: t,
            ..SamplingParams::default()
        };
        for (id, p) in reference(&logits, &params) {
            let f = counts[id as usize] as f64 / m as f64;
            let tol = 5.0 * (p * (1.0 - p) / m as f64).sqrt();
            assert!(
                (f - p).abs() <= tol,
                "seed {seed}: t {t} id {id} freq {f} vs p {p}"
            );
        }
        assert_eq!(counts[4], 0, "seed {seed}: the -inf token was drawn");
    }
    assert!(
        ids.iter().step_by(3).all(|&id| id == best),
        "seed {seed}: a temperature-0 row is not the argmax"
    );
    assert!(gumbel_argmax_rows(&x, &temps[1..]).is_err());
    Ok(())
}

/// Which rows may be drawn on the device: greedy rows anywhere; temperature-only rows on a
/// device; anything with a filter, penalty, seed, guide or log-probs, or a sampled row already on
/// the host, sends the step's rows to the host; rows of finished requests take 0.
#[test]
fn draw_plan_sends_to_the_host_only_what_needs_it() {
    let t = |temperature: f32| SamplingParams {
        temperature,
        ..SamplingParams::default()
    };
    let greedy = SamplingParams::greedy();
    let (warm, cool) = (t(1.0), t(0.5));
    assert_eq!(
        draw_plan([Some((&greedy, false)), None], false),
        DrawPlan::Argmax
    );
    assert_eq!(draw_plan([Some((&greedy, false))], true), DrawPlan::Argmax);
    assert_eq!(
        draw_plan(
            [
                Some((&warm, false)),
                None,
                Some((&greedy, false)),
                Some((&cool, false))
            ],
            false
        ),
        DrawPlan::Device(vec![1.0, 0.0, 0.0, 0.5])
    );
    assert_eq!(draw_plan([Some((&warm, false))], true), DrawPlan::Host);
    assert_eq!(draw_plan([Some((&greedy, true))], false), DrawPlan::Host);
    let host = [
        SamplingParams {
            top_k: 40,
            ..t(1.0)
        },
        SamplingParams {
            top_p: 0.9,
            ..t(1.0)
        },
        SamplingParams {
            min_p: 0.05,
            ..t(1.0)
        },
        SamplingParams {
            seed: Some(7),
            ..t(1.0)
        },
        SamplingParams {
            repeat_penalty: 1.1,
            ..t(0.0)
        },
        SamplingParams {
            presence_penalty: 0.5,
            ..t(0.0)
        },
        SamplingParams {
            frequency_penalty: 0.5,
            ..t(0.0)
        },
    ];
    for p in &host {
        assert_eq!(
            draw_plan([Some((&warm, false)), Some((p, false))], false),
            DrawPlan::Host,
            "{p:?}"
        );
    }
    // A seed or filter on a greedy row changes nothing: it is an argmax wherever it runs.
    let seeded_greedy = SamplingParams {
        seed: Some(7),
        top_k: 5,
        ..t(0.0)
    };
    assert_eq!(
        draw_plan([Some((&seeded_greedy, false)), Some((&warm, false))], false),
        DrawPlan::Device(vec![0.0, 1.0])
    );
}

#[test]
fn greedy_is_argmax() {
    let (seed, mut rng) = seeded();
    let mut s = Sampler::new(SamplingParams::greedy());
    for _ in 0..200 {
        let logits = random_logits(&mut rng, 500, 10.0);
        let best = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.partial_cmp(b.1).unwrap().then(b.0.cmp(&a.0)))
            .unwrap()
            .0 as u32;
        assert_eq!(s.sample(&logits, &[]), best, "seed {seed}");
    }
    // Ties go to the lowest id; NaN is ignored.
    assert_eq!(argmax(&[0.5, 2.0, f32::NAN, 2.0]), 1);
    assert_eq!(s.sample(&[f32::NAN, -1.0, -3.0], &[]), 1);
}

/// The chunked argmax against a plain scan: lengths around its chunk and lane sizes, ties
/// (lowest index wins, also across chunks), NaN anywhere, rows of only -inf or only NaN; and
/// `argmax_rows` on a tensor row by row.
#[test]
fn chunked_argmax_equals_a_plain_scan() {
    let (seed, mut rng) = seeded();
    let plain = |l: &[f32]| -> u32 {
        let mut best: Option<(usize, f32)> = None;
        for (i, &v) in l.iter().enumerate() {
            if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
                best = Some((i, v));
            }
        }
        best.map_or(0, |(i, _)| i as u32)
    };
    for n in [1, 15, 16, 17, 1023, 1024, 1025, 3000, 201_088] {
        for _ in 0..4 {
            // Few distinct values: ties within and across chunks.
            let mut l: Vec<f32> = (0..n).map(|_| rng.random_range(0..6) as f32).collect();
            for _ in 0..rng.random_range(0..4) {
                let i = rng.random_range(0..n);
                l[i] = [f32::NAN, f32::NEG_INFINITY, f32::INFINITY][rng.random_range(0..3)];
            }
            assert_eq!(argmax(&l), plain(&l), "seed {seed}, n {n}");
        }
        let mut l = vec![f32::NEG_INFINITY; n];
        l[n / 2] = f32::NAN;
        assert_eq!(argmax(&l), plain(&l), "n {n}: only -inf and NaN");
        assert_eq!(argmax(&vec![f32::NAN; n]), 0, "n {n}: only NaN");
    }
    let (rows, vocab) = (5, 3001);
    let l: Vec<f32> = (0..rows * vocab)
        .map(|_| rng.random_range(-8.0f32..8.0))
        .collect();
    let t =
        candle_core::Tensor::from_vec(l.clone(), (rows, vocab), &candle_core::Device::Cpu).unwrap();
    let want: Vec<u32> = l.chunks(vocab).map(plain).collect();
    assert_eq!(argmax_rows(&t).unwrap(), want, "seed {seed}");
    // A view that starts inside its storage.
    let tail = t.narrow(0, 2, 3).unwrap();
    assert_eq!(argmax_rows(&tail).unwrap(), want[2..], "seed {seed}");
}

#[test]
fn same_seed_same_tokens() {
    let (seed, mut rng) = seeded();
    let logits = random_logits(&mut rng, 1000, 2.0);
    let params = |s| SamplingParams {
        temperature: 1.0,
        top_p: 0.95,
        seed: Some(s),
        ..SamplingParams::default()
    };
    let run = |s| {
        let mut sm = Sampler::new(params(s));
        (0..64).map(|_| sm.sample(&logits, &[])).collect::<Vec<_>>()
    };
    assert_eq!(run(seed), run(seed), "seed {seed}");
    assert_ne!(run(seed), run(seed.wrapping_add(1)), "seed {seed}");
}

#[test]
fn penalties_change_exactly_the_right_logits() {
    let (seed, mut rng) = seeded();
    let vocab = 100;
    let logits = random_logits(&mut rng, vocab, 3.0);
    let history: Vec<u32> = (0..40).map(|_| rng.random_range(0..vocab as u32)).collect();
    let p = SamplingParams {
        repeat_penalty: 1.3,
        presence_penalty: 0.4,
        frequency_penalty: 0.25,
        penalty_window: 16,
        ..SamplingParams::default()
    };
    let mut got = logits.clone();
    apply_penalties(&mut got, &history, &p);
    let window = &history[history.len() - 16..];
    for id in 0..vocab {
        let count = window.iter().filter(|&&h| h as usize == id).count();
        let l = logits[id];
        let want = if count == 0 {
            l
        } else {
            let r = if l > 0.0 { l / 1.3 } else { l * 1.3 };
            r - count as f32 * 0.25 - 0.4
        };
        assert!(
            (got[id] - want).abs() < 1e-6,
            "seed {seed}: id {id} (count {count})"
        );
    }
    // A penalized former argmax loses to the runner-up under greedy.
    let mut l = vec![0.0f32; 10];
    l[3] = 2.0;
    l[7] = 1.9;
    let mut s = Sampler::new(SamplingParams {
        repeat_penalty: 1.5,
        ..SamplingParams::greedy()
    });
    assert_eq!(s.sample(&l, &[]), 3);
    assert_eq!(s.sample(&l, &[3]), 7);
    // Window 0 disables penalties; history ids beyond the vocab are ignored.
    let mut untouched = logits.clone();
    apply_penalties(
        &mut untouched,
        &[1, 2, 500],
        &SamplingParams {
            penalty_window: 0,
            ..p.clone()
        },
    );
    assert_eq!(untouched, logits);
    let mut l2 = logits.clone();
    apply_penalties(&mut l2, &[500], &p);
    assert_eq!(l2, logits);
}
