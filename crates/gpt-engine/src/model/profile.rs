//! Opt-in stage timing of the forward pass: when enabled, the device is synchronized at each
//! stage boundary and the wall time of the stage is added to its total. Off by default (the
//! synchronizations cost time); `gptoss bench --profile` turns it on.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::Device;

/// Stages of one forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Stage {
    Embed,
    QkvRope,
    KvAppend,
    Attention,
    AttnOut,
    Router,
    Experts,
    Combine,
    Output,
}

impl Stage {
    /// Every stage, in forward order.
    pub const ALL: [Stage; 9] = [
        Stage::Embed,
        Stage::QkvRope,
        Stage::KvAppend,
        Stage::Attention,
        Stage::AttnOut,
        Stage::Router,
        Stage::Experts,
        Stage::Combine,
        Stage::Output,
    ];
}

#[derive(Debug, Default)]
struct State {
    totals: [Duration; 9],
    last: Option<Instant>,
}

/// Accumulated stage times.
#[derive(Debug, Default)]
pub struct Profiler {
    enabled: bool,
    state: Mutex<State>,
}

impl Profiler {
    /// A profiler that records when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether stages are being timed.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Starts timing (at the beginning of a forward).
    pub fn start(&self, device: &Device) {
        if self.enabled {
            let _ = device.synchronize();
            if let Ok(mut s) = self.state.lock() {
                s.last = Some(Instant::now());
            }
        }
    }

    /// Ends `stage`: synchronizes and adds the time since the previous mark.
    pub fn mark(&self, device: &Device, stage: Stage) {
        if !self.enabled {
            return;
        }
        let _ = device.synchronize();
        let now = Instant::now();
        if let Ok(mut s) = self.state.lock() {
            if let Some(last) = s.last {
                let i = Stage::ALL.iter().position(|&x| x == stage).unwrap_or(0);
                s.totals[i] += now - last;
            }
            s.last = Some(now);
        }
    }

    /// `(stage, total time)` of every stage, and resets.
    pub fn take(&self) -> Vec<(Stage, Duration)> {
        let Ok(mut s) = self.state.lock() else {
            return Vec::new();
        };
        let out = Stage::ALL.iter().copied().zip(s.totals).collect();
        *s = State::default();
        out
    }
}
