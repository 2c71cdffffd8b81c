//! The fused single-sequence decode step where the device has one (CUDA, weights in the fast
//! form), behind one type so the forward has no device `cfg`: elsewhere it is never
//! available.

use candle_core::{Device, Tensor};

use super::prepare::Prepared;
use super::rope::Rope;
use super::ModelOptions;
use crate::error::{EngineError, Result};
use crate::kv::{ChunkKv, KvPool};

/// The fused decode of one model, if its device and weights have one.
pub(crate) struct FusedStep {
    #[cfg(feature = "cuda")]
    inner: Option<std::sync::Mutex<super::fast_decode::FastDecoder>>,
}

impl FusedStep {
    /// Builds the fused step for `prepared` when it applies (CUDA, fast form, not turned off).
    pub(crate) fn new(
        prepared: &Prepared,
        cfg: &gpt_weights::GptOssConfig,
        device: &Device,
        ropes: (&Rope, &Rope),
        opts: &ModelOptions,
    ) -> Self {
        #[cfg(feature = "cuda")]
        {
            let inner = if prepared.tensor_cores() && !opts.no_fast_decode {
                match super::fast_decode::FastDecoder::new(
                    prepared,
                    cfg,
                    device,
                    ropes.0,
                    ropes.1,
                    !opts.no_cuda_graph,
                ) {
                    Ok(f) => Some(std::sync::Mutex::new(f)),
                    Err(e) => {
                        tracing::warn!("single-token decode uses the batched path: {e}");
                        None
                    }
                }
            } else {
                None
            };
            Self { inner }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (prepared, cfg, device, ropes, opts);
            Self {}
        }
    }

    /// Whether single-token decodes can take the fused step.
    pub(crate) fn available(&self) -> bool {
        #[cfg(feature = "cuda")]
        return self.inner.is_some();
        #[cfg(not(feature = "cuda"))]
        false
    }

    /// Runs `token` of `chunk`; logits `(1, vocab)`.
    pub(crate) fn step(
        &self,
        prepared: &Prepared,
        token: u32,
        chunk: &ChunkKv,
        pool: &KvPool,
    ) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let Some(f) = &self.inner {
            let mut f = f
                .lock()
                .map_err(|_| EngineError::Other("fused decode: lock poisoned".into()))?;
            return Ok(f.step(prepared, token, chunk, pool)?);
        }
        let _ = (prepared, token, chunk, pool);
        Err(EngineError::Other("fused decode: not available".into()))
    }
}
