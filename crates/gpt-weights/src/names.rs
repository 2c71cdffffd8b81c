//! GGUF tensor names of GPT-OSS, built in this one place (spec §3; llama.cpp's names).

use std::fmt;

/// A per-layer tensor of a GPT-OSS block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum LayerTensor {
    AttnNorm,
    AttnQ,
    AttnQBias,
    AttnK,
    AttnKBias,
    AttnV,
    AttnVBias,
    AttnOutput,
    AttnOutputBias,
    AttnSinks,
    PostAttentionNorm,
    FfnGateInp,
    FfnGateInpBias,
    FfnGateExps,
    FfnGateExpsBias,
    FfnUpExps,
    FfnUpExpsBias,
    FfnDownExps,
    FfnDownExpsBias,
}

impl LayerTensor {
    /// All 19 per-layer tensors, in the order llama.cpp's converter writes them.
    pub const ALL: [LayerTensor; 19] = [
        LayerTensor::AttnNorm,
        LayerTensor::AttnQ,
        LayerTensor::AttnQBias,
        LayerTensor::AttnK,
        LayerTensor::AttnKBias,
        LayerTensor::AttnV,
        LayerTensor::AttnVBias,
        LayerTensor::AttnOutput,
        LayerTensor::AttnOutputBias,
        LayerTensor::AttnSinks,
        LayerTensor::PostAttentionNorm,
        LayerTensor::FfnGateInp,
        LayerTensor::FfnGateInpBias,
        LayerTensor::FfnGateExps,
        LayerTensor::FfnGateExpsBias,
        LayerTensor::FfnUpExps,
        LayerTensor::FfnUpExpsBias,
        LayerTensor::FfnDownExps,
        LayerTensor::FfnDownExpsBias,
    ];

    /// The name after `blk.N.` (`attn_q.weight`, ...).
    pub fn suffix(self) -> &'static str {
        use LayerTensor::*;
        match self {
            AttnNorm => "attn_norm.weight",
            AttnQ => "attn_q.weight",
            AttnQBias => "attn_q.bias",
            AttnK => "attn_k.weight",
            AttnKBias => "attn_k.bias",
            AttnV => "attn_v.weight",
            AttnVBias => "attn_v.bias",
            AttnOutput => "attn_output.weight",
            AttnOutputBias => "attn_output.bias",
            AttnSinks => "attn_sinks.weight",
            PostAttentionNorm => "post_attention_norm.weight",
            FfnGateInp => "ffn_gate_inp.weight",
            FfnGateInpBias => "ffn_gate_inp.bias",
            FfnGateExps => "ffn_gate_exps.weight",
            FfnGateExpsBias => "ffn_gate_exps.bias",
            FfnUpExps => "ffn_up_exps.weight",
            FfnUpExpsBias => "ffn_up_exps.bias",
            FfnDownExps => "ffn_down_exps.weight",
            FfnDownExpsBias => "ffn_down_exps.bias",
        }
    }
}

/// A tensor of a GPT-OSS GGUF: global or per layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TensorName {
    /// `token_embd.weight`.
    TokenEmbd,
    /// `output_norm.weight`.
    OutputNorm,
    /// `output.weight`.
    Output,
    /// `blk.{layer}.{suffix}`.
    Layer(usize, LayerTensor),
}

impl TensorName {
    /// Whether this is one of the dense weight matrices (the attention's Q, K, V and output
    /// projections, the output head): the matrices a dense type like Q8_0 or F16 applies to,
    /// apart from the embedding table.
    pub fn is_dense_matrix(&self) -> bool {
        use LayerTensor::*;
        matches!(
            self,
            TensorName::Output | TensorName::Layer(_, AttnQ | AttnK | AttnV | AttnOutput)
        )
    }
}

impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorName::TokenEmbd => f.write_str("token_embd.weight"),
            TensorName::OutputNorm => f.write_str("output_norm.weight"),
            TensorName::Output => f.write_str("output.weight"),
            TensorName::Layer(il, t) => write!(f, "blk.{il}.{}", t.suffix()),
        }
    }
}

/// Every tensor name of a model with `n_layer` blocks, in file order.
pub fn all(n_layer: usize) -> Vec<TensorName> {
    let mut v = vec![TensorName::TokenEmbd];
    for il in 0..n_layer {
        v.extend(LayerTensor::ALL.iter().map(|&t| TensorName::Layer(il, t)));
    }
    v.push(TensorName::OutputNorm);
    v.push(TensorName::Output);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_matches_published_file() {
        // spec §3: 3 + 19 × 24 = 459 tensors in gpt-oss-20b-mxfp4.gguf.
        assert_eq!(all(24).len(), 459);
        let names: std::collections::HashSet<String> =
            all(24).iter().map(|n| n.to_string()).collect();
        assert_eq!(names.len(), 459);
        assert!(names.contains("blk.23.attn_sinks.weight"));
        assert!(names.contains("blk.0.ffn_gate_exps.bias"));
    }
}
