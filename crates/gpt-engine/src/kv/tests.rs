//! The pool against a plain per-sequence list of rows (the slow reference), on random
//! sequences and chunkings; prefix-cache and window bookkeeping.

use super::*;
use crate::batch::{Batch, Logits};
use candle_core::Device;
use gpt_weights::config::RopeScaling;
use rand::{Rng, SeedableRng};

/// 4 layers (sliding on even ones, window `window`), 2 KV heads of width 4.
fn cfg(window: usize) -> GptOssConfig {
    GptOssConfig {
        n_layer: 4,
        n_ctx_train: 4096,
        n_embd: 8,
        n_head: 2,
        n_head_kv: 2,
        head_dim: 4,
        head_dim_v: 4,
        n_rot: 4,
        rms_eps: 1e-5,
        n_expert: 2,
        n_expert_used: 1,
        n_ff_exp: 8,
        sliding_window: window,
        sliding_layers: (0..4).map(|i| i % 2 == 0).collect(),
        rope_freq_base: 1e4,
        rope_freq_base_swa: 1e4,
        rope_scaling: RopeScaling::None,
        vocab_size: None,
    }
}

fn pool(window: usize, blocks: usize, prefix_cache: bool) -> KvPool {
    pool_of(window, blocks, prefix_cache, KvType::F32)
}

fn pool_of(window: usize, blocks: usize, prefix_cache: bool, kv_type: KvType) -> KvPool {
    KvPool::new(
        &cfg(window),
        &Device::Cpu,
        KvPoolConfig {
            block_size: 4,
            full_blocks: blocks,
            sliding_blocks: blocks,
            prefix_cache,
            kv_type,
        },
    )
    .unwrap()
}

/// A row whose values name (sequence, position, layer, k or v).
fn row_value(s: usize, p: usize, il: usize, kv: usize) -> Vec<f32> {
    (0..8)
        .map(|i| (s * 100_000 + p * 100 + il * 10 + kv) as f32 + i as f32 * 0.01)
        .collect()
}

/// Steps of random chunk sizes over 3 sequences; after each write, every row a query of the
/// chunk may see reads back as written, and sliding layers hold only what the window needs.
#[test]
fn writes_read_back_through_block_tables() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let window = 5;
    let mut p = pool(window, 40, false);
    let ids: Vec<SeqId> = (0..3).map(|_| p.add_sequence(&[])).collect();
    let mut lens = [0usize; 3];
    for _ in 0..12 {
        let mut b = Batch::new();
        let mut ts = Vec::new();
        for (s, &id) in ids.iter().enumerate() {
            if rng.random_bool(0.3) {
                continue;
            }
            let t = rng.random_range(1..7);
            let toks: Vec<u32> = (0..t).map(|_| rng.random_range(0..50)).collect();
            b.push(id, &toks, Logits::Last).unwrap();
            ts.push((s, t));
        }
        if b.is_empty() {
            continue;
        }
        let step = p.begin(&b).unwrap();
        let total: usize = ts.iter().map(|&(_, t)| t).sum();
        for il in 0..4 {
            // Every chunk's rows in one write, in batch order.
            let rows = |kv| {
                let v: Vec<f32> = step
                    .chunks()
                    .iter()
                    .zip(&ts)
                    .flat_map(|(c, &(s, t))| {
                        (c.pos..c.pos + t).flat_map(move |pp| row_value(s, pp, il, kv))
                    })
                    .collect();
                Tensor::from_vec(v, (total, 2, 4), &Device::Cpu).unwrap()
            };
            p.write(il, &step, &rows(0), &rows(1)).unwrap();
        }
        for il in 0..4 {
            // The one-token chunks as paged rows: their positions and key offsets.
            let ones: Vec<(usize, usize)> = step
                .chunks()
                .iter()
                .filter(|c| c.t == 1)
                .map(|c| (c.pos, p.gather(il, c).unwrap().2))
                .collect();
            let meta: Vec<(usize, usize)> = match p.decode_rows(il, &step).unwrap() {
                Some(r) => r
                    .meta()
                    .to_vec2::<u32>()
                    .unwrap()
                    .iter()
                    .map(|m| (m[0] as usize, m[1] as usize))
                    .collect(),
                None => vec![],
            };
            assert_eq!(meta, ones, "layer {il}");
        }
        for (c, &(s, t)) in step.chunks().iter().zip(&ts) {
            assert_eq!(c.pos, lens[s]);
            for il in 0..4 {
                let (k, v, off) = p.gather(il, c).unwrap();
                let n = k.dim(1).unwrap();
                assert_eq!(off + n, c.pos + t, "rows end at the chunk's last position");
                if il % 2 == 0 {
                    // The first query of the chunk needs positions > pos - window.
                    assert!(off <= (c.pos + 1).saturating_sub(window));
                } else {
                    assert_eq!(off, 0, "full layers keep everything");
                }
                for (kv, got) in [(0, k), (1, v)] {
                    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
                    let want: Vec<f32> = (off..off + n)
                        .flat_map(|pp| row_value(s, pp, il, kv))
                        .collect();
                    assert_eq!(got, want, "seq {s} layer {il}");
                }
            }
            lens[s] += t;
        }
        p.commit(step);
        for (s, &id) in ids.iter().enumerate() {
            assert_eq!(p.len(id).unwrap(), lens[s]);
            let [full, sliding] = p.held_blocks(id).unwrap();
            assert_eq!(full, lens[s].div_ceil(4));
            // Window 5 over blocks of 4: the block of the next position and at most two behind.
            assert!(sliding <= 3, "seq {s}: {sliding} sliding blocks held");
        }
    }
}

/// An f16 pool fed the same random chunks as an f32 one holds the f32 pool's values rounded
/// to f16, reads them back as f32, and takes half the bytes per block.
#[test]
fn an_f16_pool_holds_the_f32_pools_values_rounded() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let (mut p32, mut p16) = (pool(5, 40, false), pool_of(5, 40, false, KvType::F16));
    let (s32, s16) = (p32.add_sequence(&[]), p16.add_sequence(&[]));
    for _ in 0..6 {
        let t = rng.random_range(1..7);
        let toks: Vec<u32> = (0..t).map(|_| rng.random_range(0..50)).collect();
        let (mut b32, mut b16) = (Batch::new(), Batch::new());
        b32.push(s32, &toks, Logits::Last).unwrap();
        b16.push(s16, &toks, Logits::Last).unwrap();
        let (st32, st16) = (p32.begin(&b32).unwrap(), p16.begin(&b16).unwrap());
        for il in 0..4 {
            let rnd = |rng: &mut rand::rngs::StdRng| {
                let v: Vec<f32> = (0..t * 8).map(|_| rng.random_range(-4.0..4.0)).collect();
                Tensor::from_vec(v, (t, 2, 4), &Device::Cpu).unwrap()
            };
            let (k, v) = (rnd(&mut rng), rnd(&mut rng));
            p32.write(il, &st32, &k, &v).unwrap();
            p16.write(il, &st16, &k, &v).unwrap();
        }
        for il in 0..4 {
            let (k32, v32, o32) = p32.gather(il, &st32.chunks()[0]).unwrap();
            let (k16, v16, o16) = p16.gather(il, &st16.chunks()[0]).unwrap();
            assert_eq!(o32, o16);
            for (a, b) in [(k32, k16), (v32, v16)] {
                assert_eq!(b.dtype(), DType::F32, "gathered as f32");
                let want: Vec<f32> = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let want: Vec<f32> = want
                    .iter()
                    .map(|x| half::f16::from_f32(*x).to_f32())
                    .collect();
                let got: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(got, want, "layer {il}");
                assert!(
                    got.iter().any(|x| x.fract() != 0.0),
                    "not all zeros or integers"
                );
            }
        }
        p32.commit(st32);
        p16.commit(st16);
    }
    let c = cfg(5);
    let (b32, b16) = (
        KvPoolConfig::block_bytes(&c, 4, KvType::F32),
        KvPoolConfig::block_bytes(&c, 4, KvType::F16),
    );
    assert_eq!([b16[0] * 2, b16[1] * 2], b32);
}

#[test]
fn an_abort_leaves_the_pool_as_it_was_and_too_little_room_is_an_error() {
    let mut p = pool(5, 4, false);
    let a = p.add_sequence(&[]);
    let b = Batch::single(a, &[1; 9], Logits::Last).unwrap();
    let step = p.begin(&b).unwrap();
    assert_eq!(p.free_blocks(), [1, 1]);
    p.abort(step);
    assert_eq!(p.free_blocks(), [4, 4]);
    assert_eq!(p.len(a).unwrap(), 0);
    let big = Batch::single(a, &[1; 17], Logits::Last).unwrap();
    let e = p.begin(&big).unwrap_err();
    assert!(e.to_string().contains("5, "), "{e}");
    assert_eq!(p.free_blocks(), [4, 4]);
}

fn fill(p: &mut KvPool, seq: SeqId, tokens: &[u32]) {
    let b = Batch::single(seq, tokens, Logits::Last).unwrap();
    let step = p.begin(&b).unwrap();
    p.commit(step);
}

#[test]
fn a_shared_prefix_is_taken_from_the_cache() {
    let mut p = pool(5, 16, true);
    let prompt: Vec<u32> = (0..23).collect();
    let a = p.add_sequence(&prompt);
    assert_eq!(p.len(a).unwrap(), 0, "nothing cached yet");
    fill(&mut p, a, &prompt);
    assert_eq!(p.cached_blocks()[0], 5, "23 tokens fill 5 blocks of 4");
    // Same first 18 tokens: blocks 0..4 match (16 tokens).
    let mut other: Vec<u32> = prompt[..18].to_vec();
    other.extend([99, 98, 97]);
    let b = p.add_sequence(&other);
    assert_eq!(p.len(b).unwrap(), 16);
    assert_eq!(p.cached_tokens(b).unwrap(), 16);
    // The sliding group holds only the window's blocks before the cut.
    assert_eq!(p.held_blocks(b).unwrap(), [4, 1]);
    // An identical prompt leaves its last token to compute.
    let c = p.add_sequence(&prompt[..20]);
    assert_eq!(
        p.len(c).unwrap(),
        16,
        "20 tokens: at most 19 from the cache, 4 whole blocks"
    );
    // After everything is gone, the blocks are free and still cached.
    for s in [a, b, c] {
        p.remove_sequence(s).unwrap();
    }
    assert_eq!(p.free_blocks(), [16, 16]);
    let d = p.add_sequence(&prompt);
    assert_eq!(p.len(d).unwrap(), 20);
    // Without the prefix cache nothing is shared.
    let mut q = pool(5, 16, false);
    let e = q.add_sequence(&prompt);
    fill(&mut q, e, &prompt);
    let g = q.add_sequence(&prompt);
    assert_eq!(q.len(g).unwrap(), 0);
}

#[test]
fn a_prefix_whose_window_blocks_were_evicted_is_cut_earlier() {
    let mut p = pool(5, 12, true);
    let prompt: Vec<u32> = (0..40).collect();
    let a = p.add_sequence(&prompt);
    // Prefill in chunks so the early sliding blocks are given back (cached, free).
    for piece in prompt.chunks(4) {
        fill(&mut p, a, piece);
    }
    p.remove_sequence(a).unwrap();
    // Evict the oldest freed blocks by filling the pool with another sequence.
    let f = p.add_sequence(&[]);
    fill(&mut p, f, &[7; 24]);
    let b = p.add_sequence(&prompt);
    let got = p.len(b).unwrap();
    assert!(
        got.is_multiple_of(4) && got < 40,
        "cut at a block boundary: {got}"
    );
    // Whatever was taken must be complete in both groups for the next query.
    let [full, sliding] = p.held_blocks(b).unwrap();
    assert_eq!(full, got / 4);
    assert!(got == 0 || sliding >= 1);
}
