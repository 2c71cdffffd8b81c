//! The MoE block (spec §6.4): router → top-k softmax → the chosen experts' SwiGLU-OAI MLPs →
//! routing-weighted sum, with the experts in their device form, chosen once at load: ggml
//! MXFP4 blocks (or f32) for the generic kernels, or, on CUDA, the planar MXFP4 layout that the
//! fused decode and the tensor-core prefill read.

use candle_core::{Device, Result, Tensor};
use gpt_kernels as k;
use gpt_weights::load::Experts;

use super::moe::{experts_forward, ExpertGroups};
use super::probe::RouterProbe;
use super::profile::{Profiler, Stage};
use super::{SWIGLU_ALPHA, SWIGLU_LIMIT};

/// What watches a forward: the stage timer and the router probe.
pub(crate) type Observers<'a> = (&'a Profiler, &'a RouterProbe);

/// Planar MXFP4 experts: nibble bytes `U8 (e, n, k/2)`, exponent bytes `U8 (e, n, k/32)`.
#[cfg(feature = "cuda")]
pub(crate) struct Planar {
    pub qs: Tensor,
    pub e8: Tensor,
}

/// The three expert matrices of a layer with their biases `(e, n)`.
pub(crate) enum ExpertsForm {
    /// As loaded (the generic kernels).
    Generic {
        gate: Experts,
        up: Experts,
        down: Experts,
    },
    /// Planar MXFP4 on CUDA, with the kernels that run few slots per expert.
    #[cfg(feature = "cuda")]
    Planar {
        gate: Planar,
        up: Planar,
        down: Planar,
        rows: k::cuda::moe_rows::RowsKernel,
    },
}

/// One layer's MoE block.
pub(crate) struct Moe {
    /// Router `(e, d)` f32 and bias `(e)`.
    pub router_w: Tensor,
    pub router_b: Tensor,
    pub experts: ExpertsForm,
    /// Biases `(e, ff)`, `(e, ff)`, `(e, d)`.
    pub gate_b: Tensor,
    pub up_b: Tensor,
    pub down_b: Tensor,
    pub n_expert: usize,
    pub top_k: usize,
    /// Experts over at least this many slots take the grouped GEMMs
    /// ([`super::ModelOptions::moe_grouped_min_slots`]).
    pub grouped_min_slots: usize,
    /// The CPU kernels of the MXFP4 expert matmuls.
    pub cpu: k::CpuKernels,
    /// The block's tensors are in host memory while the model runs on a GPU (`--cpu-moe`): the
    /// input goes to the host, the whole block runs on the CPU kernels, the output comes back.
    pub on_host: bool,
}

impl Moe {
    /// `m (t, d)` → `(t, d)`, on `dev` (the block runs on the host if it lives there).
    pub(crate) fn forward(&self, m: &Tensor, obs: Observers<'_>, dev: &Device) -> Result<Tensor> {
        if self.on_host {
            let out = self.forward_on(&m.to_device(&Device::Cpu)?, obs, &Device::Cpu)?;
            return out.to_device(dev);
        }
        self.forward_on(m, obs, dev)
    }

    /// [`Moe::forward`] where the block's tensors are.
    fn forward_on(&self, m: &Tensor, (p, probe): Observers<'_>, dev: &Device) -> Result<Tensor> {
        let (ids, weights) = if probe.enabled() {
            let logits = m
                .matmul(&self.router_w.t()?)?
                .broadcast_add(&self.router_b)?; // (t, e)
            probe.record(&logits, self.top_k)?;
            k::router_topk_softmax(&logits, self.top_k)?
        } else {
            k::moe_router(m, &self.router_w, &self.router_b, self.top_k)?
        }; // (t, k) u32, f32
        p.mark(dev, Stage::Router);
        match &self.experts {
            ExpertsForm::Generic { gate, up, down } => {
                let mxfp4 = matches!(gate, Experts::Mxfp4 { .. });
                let groups = if mxfp4 && ids.elem_count() >= self.grouped_min_slots {
                    Some(ExpertGroups::new(&ids, self.n_expert)?)
                } else {
                    None
                };
                let g = groups.as_ref();
                let c = self.cpu;
                let gate = experts_forward(m, gate, &self.gate_b, &ids, g, c)?; // (t, k, ff)
                let up = experts_forward(m, up, &self.up_b, &ids, g, c)?; // (t, k, ff)
                let act = k::swiglu_oai(&gate, &up, SWIGLU_ALPHA, SWIGLU_LIMIT)?; // (t, k, ff)
                let down = experts_forward(&act, down, &self.down_b, &ids, g, c)?; // (t, k, d)
                p.mark(dev, Stage::Experts);
                let out = k::moe_combine(&weights, &down)?; // (t, d)
                p.mark(dev, Stage::Combine);
                Ok(out)
            }
            #[cfg(feature = "cuda")]
            ExpertsForm::Planar {
                gate,
                up,
                down,
                rows,
            } => {
                let few = ids.elem_count() < self.grouped_min_slots;
                let out = super::prefill::planar_experts(
                    (gate, up, down),
                    (&self.gate_b, &self.up_b, &self.down_b),
                    m,
                    (&ids, &weights),
                    self.n_expert,
                    few.then_some(*rows),
                )?; // (t, d)
                p.mark(dev, Stage::Experts);
                Ok(out)
            }
        }
    }

    /// Bytes its tensors hold on the model's device (none when it lives on the host).
    pub(crate) fn device_bytes(&self) -> u64 {
        if self.on_host {
            return 0;
        }
        self.bytes()
    }

    /// Bytes its tensors hold.
    fn bytes(&self) -> u64 {
        use super::prepare::tensor_bytes;
        let experts: u64 = match &self.experts {
            ExpertsForm::Generic { gate, up, down } => [gate, up, down]
                .into_iter()
                .map(|e| match e {
                    Experts::Mxfp4 { blocks, .. } => tensor_bytes(blocks),
                    Experts::Dense(t) => tensor_bytes(t),
                })
                .sum(),
            #[cfg(feature = "cuda")]
            ExpertsForm::Planar { gate, up, down, .. } => [gate, up, down]
                .into_iter()
                .map(|p| tensor_bytes(&p.qs) + tensor_bytes(&p.e8))
                .sum(),
        };
        experts
            + [
                &self.router_w,
                &self.router_b,
                &self.gate_b,
                &self.up_b,
                &self.down_b,
            ]
            .into_iter()
            .map(tensor_bytes)
            .sum::<u64>()
    }
}
