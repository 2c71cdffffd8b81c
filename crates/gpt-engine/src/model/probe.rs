//! Opt-in record of how close each token's expert choice was: per MoE layer and token, the
//! router's margin between its k-th and (k+1)-th logits, and the scale of its logits. Two
//! devices whose router inputs differ by rounding pick different experts only where this margin
//! is about that small, so `gptoss compare-devices` uses it to tell a near-tie expert flip from
//! a wrong result. Off by default (it copies every router's logits to the host).

use std::sync::Mutex;

use candle_core::{Result, Tensor};

/// One token's router at one layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouterGap {
    /// The k-th largest logit minus the (k+1)-th (`+inf` when every expert is chosen).
    pub margin: f32,
    /// The largest |logit|: the size a relative error of the router's input moves logits by.
    pub scale: f32,
}

/// The gaps recorded since the last [`RouterProbe::take`]: one `Vec` per MoE layer run (in
/// forward order), one [`RouterGap`] per token row.
#[derive(Debug, Default)]
pub struct RouterProbe {
    enabled: bool,
    gaps: Mutex<Vec<Vec<RouterGap>>>,
}

impl RouterProbe {
    /// A probe that records when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            gaps: Mutex::new(Vec::new()),
        }
    }

    /// Whether gaps are being recorded.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Records `logits (t, e)`'s gap at `top_k` for every row.
    pub(crate) fn record(&self, logits: &Tensor, top_k: usize) -> Result<()> {
        if !self.enabled {
            return Ok(());
        }
        let rows: Vec<Vec<f32>> = logits
            .to_dtype(candle_core::DType::F32)?
            .to_device(&candle_core::Device::Cpu)?
            .to_vec2()?;
        let layer = rows
            .iter()
            .map(|r| RouterGap {
                margin: margin(r, top_k),
                scale: r.iter().fold(0f32, |m, x| m.max(x.abs())),
            })
            .collect();
        if let Ok(mut g) = self.gaps.lock() {
            g.push(layer);
        }
        Ok(())
    }

    /// The gaps recorded so far, `[layer run][token]`, and resets.
    pub fn take(&self) -> Vec<Vec<RouterGap>> {
        self.gaps
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

/// The k-th largest value minus the (k+1)-th (`+inf` when there is no (k+1)-th).
pub fn margin(row: &[f32], k: usize) -> f32 {
    if k == 0 || k >= row.len() {
        return f32::INFINITY;
    }
    let mut v = row.to_vec();
    v.sort_unstable_by(|a, b| b.total_cmp(a));
    v[k - 1] - v[k]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_is_the_gap_at_k_whatever_the_order() {
        let row = [0.5f32, 3.0, -1.0, 2.75, 1.0];
        assert_eq!(margin(&row, 1), 0.25);
        assert_eq!(margin(&row, 2), 1.75);
        assert_eq!(margin(&row, 5), f32::INFINITY);
        let p = RouterProbe::new(true);
        let t = Tensor::new(
            &[[0.5f32, 3.0, -1.0, 2.75], [1.0, 1.0, 0.0, 2.0]],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        p.record(&t, 2).unwrap();
        let g = |margin, scale| RouterGap { margin, scale };
        assert_eq!(p.take(), vec![vec![g(2.25, 3.0), g(0.0, 2.0)]]);
        assert!(p.take().is_empty());
        let off = RouterProbe::new(false);
        off.record(&t, 2).unwrap();
        assert!(off.take().is_empty());
    }
}
