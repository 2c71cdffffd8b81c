//! Slow reference implementations composed only of candle tensor ops: the test oracle.
//!
//! They share no code with the kernels: the MXFP4 value table and scales are rebuilt from their
//! definitions (E2M1, 2^(e−128) in f64), nibbles are split with float arithmetic, attention
//! materializes the full mask and the sink column, and the router sorts all logits.

use candle_core::{bail, DType, Device, Result, Tensor, D};

/// Doubled E2M1 value of each 4-bit code, derived from the format (bit 3 sign, bits 2–1
/// exponent with bias 1, bit 0 mantissa; exponent 0 is subnormal).
fn e2m1_doubled(dev: &Device) -> Result<Tensor> {
    let vals: Vec<f32> = (0u8..16)
        .map(|c| {
            let sign = if c & 8 != 0 { -1.0 } else { 1.0 };
            let exp = i32::from((c >> 1) & 3);
            let man = f64::from(c & 1);
            let mag = if exp == 0 {
                0.5 * man
            } else {
                2f64.powi(exp - 1) * (1.0 + 0.5 * man)
            };
            // + 0.0 turns the −0 of code 8 into +0, as in ggml's int8 `kvalues_mxfp4`.
            (2.0 * sign * mag) as f32 + 0.0
        })
        .collect();
    Tensor::from_vec(vals, 16, dev)
}

/// Table of the halved E8M0 scale 2^(e−128) for e = 0..=255, exact via f64.
fn e8m0_half(dev: &Device) -> Result<Tensor> {
    let vals: Vec<f32> = (0..256).map(|e| 2f64.powi(e - 128) as f32).collect();
    Tensor::from_vec(vals, 256, dev)
}

/// Reference of [`crate::mxfp4_dequant`]: U8 `(.., rows, cols/32·17)` → f32 `(.., rows, cols)`.
pub fn mxfp4_dequant_slow(blocks: &Tensor, cols: usize) -> Result<Tensor> {
    let dims = blocks.dims();
    let Some((_, lead)) = dims.split_last() else {
        bail!("mxfp4_dequant_slow: scalar blocks");
    };
    let dev = blocks.device();
    let rows: usize = lead.iter().product();
    let nb = cols / 32;
    let b = blocks.reshape((rows, nb, 17))?; // (rows, nb, 17)
    let e = b.narrow(2, 0, 1)?.to_dtype(DType::U32)?.flatten_all()?; // (rows·nb)
    let scale = e8m0_half(dev)?
        .index_select(&e, 0)?
        .reshape((rows, nb, 1))?; // (rows, nb, 1)
    let qs = b.narrow(2, 1, 16)?.to_dtype(DType::F32)?; // (rows, nb, 16)
    let hi = qs.affine(1.0 / 16.0, 0.0)?.floor()?; // high nibble
    let lo = (&qs - hi.affine(16.0, 0.0)?)?; // low nibble
    let table = e2m1_doubled(dev)?;
    let lookup = |codes: &Tensor| -> Result<Tensor> {
        let idx = codes.to_dtype(DType::U32)?.flatten_all()?;
        table.index_select(&idx, 0)?.reshape((rows, nb, 16))
    };
    let vals = Tensor::cat(&[lookup(&lo)?, lookup(&hi)?], 2)?; // (rows, nb, 32)
    let mut out_dims = lead.to_vec();
    out_dims.push(cols);
    vals.broadcast_mul(&scale)?.reshape(out_dims) // (.., rows, cols)
}

/// Reference of [`crate::mxfp4_matmul`]: dequantize, then candle `matmul`.
pub fn mxfp4_matmul_slow(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let k = x.dim(D::Minus1)?;
    let wd = mxfp4_dequant_slow(w, k)?; // (n, k)
    let x2 = x.flatten_to(x.rank() - 2)?.contiguous()?; // (m, k)
    let mut y = x2.matmul(&wd.t()?.contiguous()?)?; // (m, n)
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    let mut out_dims = x.dims().to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last = wd.dim(0)?;
    }
    y.reshape(out_dims)
}

/// Reference of [`crate::q8_0_matmul`]: Candle's own Q8_0 dequantization (`QTensor`), then
/// candle `matmul` in f32.
pub fn q8_0_matmul_slow(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    use candle_core::quantized::{GgmlDType, QStorage, QTensor};
    let k = x.dim(D::Minus1)?;
    let n = w.dim(0)?;
    let bytes = w.flatten_all()?.to_vec1::<u8>()?;
    let storage = QStorage::from_data(
        std::borrow::Cow::Owned(bytes),
        &Device::Cpu,
        GgmlDType::Q8_0,
    )?;
    let wd = QTensor::new(storage, (n, k))?.dequantize(&Device::Cpu)?; // (n, k)
    let x2 = x.flatten_to(x.rank() - 2)?.contiguous()?; // (m, k)
    let mut y = x2.matmul(&wd.t()?.contiguous()?)?; // (m, n)
    if let Some(b) = bias {
        y = y.broadcast_add(b)?;
    }
    let mut out_dims = x.dims().to_vec();
    if let Some(last) = out_dims.last_mut() {
        *last = n;
    }
    y.reshape(out_dims)
}

/// Reference of [`crate::moe_mxfp4_matmul`]: dequantize all experts, gather one weight matrix
/// per slot, batched `matmul`.
pub fn moe_mxfp4_matmul_slow(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    ids: &Tensor,
) -> Result<Tensor> {
    let (t, top_k) = ids.dims2()?;
    let k = x.dim(D::Minus1)?;
    let wd = mxfp4_dequant_slow(w, k)?; // (e, n, k)
    let n = wd.dim(1)?;
    let ids_flat = ids.flatten_all()?; // (t·top_k)
    let w_sel = wd.index_select(&ids_flat, 0)?; // (t·top_k, n, k)
    let xs = match x.rank() {
        2 => x.unsqueeze(1)?.broadcast_as((t, top_k, k))?, // (t, top_k, k)
        _ => x.clone(),
    };
    let xs = xs.contiguous()?.reshape((t * top_k, 1, k))?; // (t·top_k, 1, k)
    let y = xs.matmul(&w_sel.transpose(1, 2)?.contiguous()?)?; // (t·top_k, 1, n)
    let mut y = y.reshape((t * top_k, n))?;
    if let Some(b) = bias {
        y = (y + b.index_select(&ids_flat, 0)?)?; // (t·top_k, n)
    }
    y.reshape((t, top_k, n))
}

/// Reference of [`crate::swiglu_oai`].
pub fn swiglu_oai_slow(gate: &Tensor, up: &Tensor, alpha: f32, limit: f32) -> Result<Tensor> {
    let limit = f64::from(limit);
    let g = gate.minimum(limit)?;
    let u = up.clamp(-limit, limit)?;
    let sig = g
        .affine(-f64::from(alpha), 0.0)?
        .exp()?
        .affine(1.0, 1.0)?
        .recip()?;
    (g * sig)? * u.affine(1.0, 1.0)?
}

/// Reference of [`crate::attention_with_sinks`] (OpenAI `sdpa`): explicit additive mask over
/// absolute positions, a sink column concatenated to the scores, softmax, column dropped.
#[allow(clippy::too_many_arguments)]
pub fn attention_with_sinks_slow(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    sinks: &Tensor,
    scale: f32,
    window: Option<usize>,
    q_offset: usize,
    kv_offset: usize,
) -> Result<Tensor> {
    let (b, t, hq, d) = q.dims4()?;
    let (_, s, hkv, _) = k.dims4()?;
    let group = hq / hkv;
    let dev = q.device();
    // GQA: repeat every kv head `group` times → (b, hq, s, d).
    let expand = |x: &Tensor| -> Result<Tensor> {
        x.transpose(1, 2)? // (b, hkv, s, d)
            .unsqueeze(2)? // (b, hkv, 1, s, d)
            .broadcast_as((b, hkv, group, s, d))?
            .reshape((b, hq, s, d))
    };
    let (kx, vx) = (expand(k)?, expand(v)?);
    let qx = q.transpose(1, 2)?.contiguous()?; // (b, hq, t, d)
    let scores = qx
        .matmul(&kx.t()?.contiguous()?)? // (b, hq, t, s)
        .affine(f64::from(scale), 0.0)?;
    // Allowed iff kpos <= qpos and (qpos − kpos < w); positions as exact small f32 integers.
    let qpos = Tensor::arange(q_offset as f32, (q_offset + t) as f32, dev)?.reshape((t, 1))?;
    let kpos = Tensor::arange(kv_offset as f32, (kv_offset + s) as f32, dev)?.reshape((1, s))?;
    let mut allowed = kpos.broadcast_le(&qpos)?.to_dtype(DType::F32)?; // (t, s)
    if let Some(w) = window {
        let near = qpos
            .broadcast_sub(&kpos)?
            .lt(w as f64)?
            .to_dtype(DType::F32)?;
        allowed = (allowed * near)?;
    }
    let zeros = Tensor::zeros((t, s), DType::F32, dev)?;
    let neg_inf = Tensor::full(f32::NEG_INFINITY, (t, s), dev)?;
    let mask = allowed.ne(0f64)?.where_cond(&zeros, &neg_inf)?; // (t, s)
    let scores = scores.broadcast_add(&mask)?; // (b, hq, t, s)
    let sink_col = sinks.reshape((1, hq, 1, 1))?.broadcast_as((b, hq, t, 1))?;
    let all = Tensor::cat(&[&scores, &sink_col.contiguous()?], 3)?; // (b, hq, t, s + 1)
    let max = all.max_keepdim(D::Minus1)?;
    let exp = all.broadcast_sub(&max)?.exp()?;
    let probs = exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?;
    let probs = probs.narrow(3, 0, s)?.contiguous()?; // (b, hq, t, s)
    probs
        .matmul(&vx.contiguous()?)? // (b, hq, t, d)
        .transpose(1, 2)? // (b, t, hq, d)
        .contiguous()
}

/// Reference of [`crate::paged_decode_attention`]: each row's keys and values gathered from
/// the pool through its blocks (`index_select`), then [`attention_with_sinks_slow`] for its
/// one query. `q` `(rows, hq, d)`, pool `k`, `v` `(blocks · bs, hkv, d)` → `(rows, hq, d)`.
#[allow(clippy::too_many_arguments)]
pub fn paged_decode_attention_slow(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    sinks: &Tensor,
    rows: &[crate::PagedRow],
    block_size: usize,
    scale: f32,
    window: Option<usize>,
) -> Result<Tensor> {
    let mut outs = Vec::with_capacity(rows.len());
    for (r, row) in rows.iter().enumerate() {
        let s = row.pos + 1 - row.kv_offset;
        let idx: Vec<u32> = (0..s)
            .map(|j| row.blocks[j / block_size] * block_size as u32 + (j % block_size) as u32)
            .collect();
        let idx = Tensor::from_vec(idx, s, q.device())?;
        let kr = k.index_select(&idx, 0)?.unsqueeze(0)?; // (1, s, hkv, d)
        let vr = v.index_select(&idx, 0)?.unsqueeze(0)?;
        let qr = q.narrow(0, r, 1)?.unsqueeze(0)?; // (1, 1, hq, d)
        let o =
            attention_with_sinks_slow(&qr, &kr, &vr, sinks, scale, window, row.pos, row.kv_offset)?;
        outs.push(o.squeeze(0)?); // (1, hq, d)
    }
    Tensor::cat(&outs, 0) // (rows, hq, d)
}

/// Reference of [`crate::router_topk_softmax`]: stable descending sort of all logits (ties keep
/// the lower index first), then softmax over all experts, gathered and renormalized (equal to
/// the softmax over the selected logits, spec §6.4).
pub fn router_topk_softmax_slow(logits: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let ids = logits
        .contiguous()?
        .arg_sort_last_dim(false)? // (t, e)
        .narrow(1, 0, k)?
        .contiguous()?; // (t, k)
    let max = logits.max_keepdim(D::Minus1)?;
    let exp = logits.broadcast_sub(&max)?.exp()?;
    let probs = exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?; // (t, e)
    let sel = probs.gather(&ids, 1)?; // (t, k)
    let weights = sel.broadcast_div(&sel.sum_keepdim(D::Minus1)?)?;
    Ok((ids, weights))
}
