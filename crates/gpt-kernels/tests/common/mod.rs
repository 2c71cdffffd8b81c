//! Helpers shared by the CUDA test binaries (each uses part of them).
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A generator seeded from `GPTOSS_TEST_SEED`, else at random; prints the seed for `test`.
pub fn seeded_rng(test: &str) -> StdRng {
    let seed = std::env::var("GPTOSS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: seed {seed}");
    StdRng::seed_from_u64(seed)
}

/// `rows` (rows of `width` values) laid out in a paged pool of blocks of `bs` rows: logical
/// block `b` at pool block `perm[b]`; the pool's other rows 0.
pub fn paged_pool(rows: &[f32], width: usize, bs: usize, perm: &[u32]) -> Vec<f32> {
    let mut pool = vec![0f32; perm.len() * bs * width];
    for (j, row) in rows.chunks_exact(width).enumerate() {
        let to = (perm[j / bs] as usize * bs + j % bs) * width;
        pool[to..to + width].copy_from_slice(row);
    }
    pool
}

/// Random weights in the Q8 split form, `len` values: int8 `qs`, the low plane `lo` (zeros
/// unless `two`: then each weight is `d · (128·qs + lo)`), per-32 scales `d` drawn from
/// `d_range` (divided by 128 for two planes, so both forms have weights of one size), and the
/// values they hold, `w`.
pub struct SplitWeights {
    pub qs: Vec<u8>,
    pub lo: Vec<u8>,
    pub d: Vec<f32>,
    pub w: Vec<f64>,
}

impl SplitWeights {
    pub fn random(rng: &mut StdRng, len: usize, two: bool, d_range: (f32, f32)) -> Self {
        let qs: Vec<u8> = (0..len)
            .map(|_| rng.random_range(-127i8..=127) as u8)
            .collect();
        let lo: Vec<u8> = (0..len)
            .map(|_| {
                if two {
                    rng.random_range(-64i8..=63) as u8
                } else {
                    0
                }
            })
            .collect();
        let d: Vec<f32> = (0..len / 32)
            .map(|_| rng.random_range(d_range.0..d_range.1) / if two { 128.0 } else { 1.0 })
            .collect();
        let w = (0..len)
            .map(|i| {
                let q = f64::from(qs[i] as i8) * if two { 128.0 } else { 1.0 };
                (q + f64::from(lo[i] as i8)) * f64::from(d[i / 32])
            })
            .collect();
        Self { qs, lo, d, w }
    }
}
