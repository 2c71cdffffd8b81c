//! Continuous batching (vLLM's scheduler, Sarathi's chunked prefill): each step packs every
//! running decode, then prefill chunks of running and waiting sequences, into one [`Batch`]
//! of at most `max_batch_tokens` rows and `max_seqs` sequences.
//!
//! A sequence is its tokens (prompt, then what was sampled) and how many of them have keys and
//! values in the [`KvPool`]; a step computes the next ones. A decode is a sequence with one
//! token left to compute. Admission is bounded by free blocks: when a decode's new block does
//! not fit, the newest running sequence not yet in the step is preempted — its blocks freed,
//! and it goes back to the front of the queue to be recomputed later (through the prefix
//! cache when on).

use std::collections::{HashMap, VecDeque};

use crate::batch::{Batch, Logits};
use crate::error::Result;
use crate::kv::{KvPool, SeqId};

/// Bounds of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most rows (tokens) in one step.
    pub max_batch_tokens: usize,
    /// Most sequences running at once.
    pub max_seqs: usize,
}

#[derive(Debug)]
struct SchedSeq {
    tokens: Vec<u32>,
    /// The pool's sequence while running.
    seq: Option<SeqId>,
    /// Tokens with keys and values in the pool.
    computed: usize,
    /// Whether it was admitted before (a preempted sequence comes back).
    admitted: bool,
}

/// One step's work.
#[derive(Debug, Default)]
pub struct Plan {
    /// The forward's input.
    pub batch: Batch,
    /// Per chunk of `batch`: the request and whether it yields logits (one row).
    pub chunks: Vec<(u64, bool)>,
    /// Requests admitted for the first time: `(id, prompt tokens from the prefix cache)`.
    pub admitted: Vec<(u64, usize)>,
    /// Requests preempted in this step.
    pub preempted: Vec<u64>,
}

/// The scheduler's queues.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    seqs: HashMap<u64, SchedSeq>,
    waiting: VecDeque<u64>,
    /// In admission order.
    running: Vec<u64>,
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new(cfg: SchedulerConfig) -> Self {
        Self {
            cfg: SchedulerConfig {
                max_batch_tokens: cfg.max_batch_tokens.max(1),
                max_seqs: cfg.max_seqs.max(1),
            },
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    /// Queues request `id` with its prompt.
    pub fn add(&mut self, id: u64, prompt: &[u32]) {
        self.seqs.insert(
            id,
            SchedSeq {
                tokens: prompt.to_vec(),
                seq: None,
                computed: 0,
                admitted: false,
            },
        );
        self.waiting.push_back(id);
    }

    /// Requests waiting (new or preempted).
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Requests running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Whether there is nothing to do.
    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Appends a sampled token to `id`.
    pub fn push_token(&mut self, id: u64, token: u32) {
        if let Some(s) = self.seqs.get_mut(&id) {
            s.tokens.push(token);
        }
    }

    /// Removes `id`, giving back its blocks.
    pub fn finish(&mut self, id: u64, pool: &mut KvPool) -> Result<()> {
        self.waiting.retain(|&w| w != id);
        self.running.retain(|&r| r != id);
        if let Some(seq) = self.seqs.remove(&id).and_then(|s| s.seq) {
            pool.remove_sequence(seq)?;
        }
        Ok(())
    }

    /// Counts the chunks of `plan` as computed (after its forward succeeded).
    pub fn complete(&mut self, plan: &Plan) {
        for (c, (id, _)) in plan.batch.chunks().iter().zip(&plan.chunks) {
            if let Some(s) = self.seqs.get_mut(id) {
                s.computed += c.tokens.len();
            }
        }
    }

    fn preempt(&mut self, id: u64, pool: &mut KvPool, plan: &mut Plan) -> Result<()> {
        self.running.retain(|&r| r != id);
        if let Some(s) = self.seqs.get_mut(&id) {
            if let Some(seq) = s.seq.take() {
                pool.remove_sequence(seq)?;
            }
            s.computed = 0;
        }
        self.waiting.push_front(id);
        plan.preempted.push(id);
        tracing::debug!(id, "preempted");
        Ok(())
    }

    /// The most tokens of `seq` (at most `want`) that fit the pool beside `appends`.
    fn fit(pool: &KvPool, appends: &[(SeqId, usize)], seq: SeqId, want: usize) -> Result<usize> {
        let fits = |n: usize| -> Result<bool> {
            let mut a = appends.to_vec();
            a.push((seq, n));
            pool.can_append(&a)
        };
        if fits(want)? {
            return Ok(want);
        }
        let (mut lo, mut hi) = (0usize, want); // fits(lo), !fits(hi)
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if fits(mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    fn push_chunk(&self, plan: &mut Plan, id: u64, n: usize) -> Result<(SeqId, usize)> {
        let s = &self.seqs[&id];
        let seq = s
            .seq
            .ok_or(crate::error::EngineError::UnknownSequence(id))?;
        let end = s.computed + n;
        let last = end == s.tokens.len();
        let logits = if last { Logits::Last } else { Logits::None };
        plan.batch.push(seq, &s.tokens[s.computed..end], logits)?;
        plan.chunks.push((id, last));
        Ok((seq, n))
    }

    /// Plans the next step.
    pub fn schedule(&mut self, pool: &mut KvPool) -> Result<Plan> {
        let mut plan = Plan::default();
        let mut appends: Vec<(SeqId, usize)> = Vec::new();
        let mut budget = self.cfg.max_batch_tokens;
        let remaining = |s: &SchedSeq| s.tokens.len() - s.computed;
        // 1. Decodes, oldest first; preempt the newest when a block is missing.
        let decodes: Vec<u64> = self
            .running
            .iter()
            .copied()
            .filter(|id| remaining(&self.seqs[id]) == 1)
            .collect();
        for id in decodes {
            if budget == 0 || !self.running.contains(&id) {
                continue;
            }
            while let Some(seq) = self.seqs[&id].seq {
                if Self::fit(pool, &appends, seq, 1)? == 1 {
                    appends.push(self.push_chunk(&mut plan, id, 1)?);
                    budget -= 1;
                    break;
                }
                let in_step: Vec<SeqId> = appends.iter().map(|a| a.0).collect();
                let victim = self
                    .running
                    .iter()
                    .rev()
                    .copied()
                    .find(|v| self.seqs[v].seq.is_some_and(|s| !in_step.contains(&s)))
                    .unwrap_or(id);
                self.preempt(victim, pool, &mut plan)?;
                if victim == id {
                    break;
                }
            }
        }
        // 2. Prefill chunks of running sequences, in admission order.
        let prefills: Vec<u64> = self
            .running
            .iter()
            .copied()
            .filter(|id| remaining(&self.seqs[id]) > 1)
            .collect();
        for id in prefills {
            if budget == 0 {
                break;
            }
            let Some(seq) = self.seqs[&id].seq else {
                continue;
            };
            let n = Self::fit(pool, &appends, seq, remaining(&self.seqs[&id]).min(budget))?;
            if n > 0 {
                appends.push(self.push_chunk(&mut plan, id, n)?);
                budget -= n;
            }
        }
        // 3. Admit waiting sequences while the step and the pool have room.
        while budget > 0 && self.running.len() < self.cfg.max_seqs {
            let Some(&id) = self.waiting.front() else {
                break;
            };
            let tokens = self.seqs[&id].tokens.clone();
            let seq = pool.add_sequence(&tokens);
            let cached = pool.len(seq)?;
            let n = Self::fit(pool, &appends, seq, (tokens.len() - cached).min(budget))?;
            if n == 0 {
                pool.remove_sequence(seq)?;
                break;
            }
            self.waiting.pop_front();
            self.running.push(id);
            if let Some(s) = self.seqs.get_mut(&id) {
                s.seq = Some(seq);
                s.computed = cached;
                if !s.admitted {
                    s.admitted = true;
                    plan.admitted.push((id, cached));
                }
            }
            appends.push(self.push_chunk(&mut plan, id, n)?);
            budget -= n;
        }
        Ok(plan)
    }
}
