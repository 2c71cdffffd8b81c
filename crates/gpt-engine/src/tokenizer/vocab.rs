//! [`Vocab`]: the GGUF-shaped vocabulary, and the offline builder of the
//! 201 088-entry o200k_harmony vocabulary of gpt-oss.

use rustc_hash::FxHashMap;

use super::byte_level::bytes_to_string;
use super::TokenizerError;

/// GGUF `tokenizer.ggml.token_type` values.
pub mod token_type {
    /// Ordinary byte-level BPE token.
    pub const NORMAL: i32 = 1;
    /// Unknown-token placeholder (SentencePiece).
    pub const UNKNOWN: i32 = 2;
    /// Special/control token (`<|start|>` …).
    pub const CONTROL: i32 = 3;
    /// User-defined added token (matched literally, not special).
    pub const USER_DEFINED: i32 = 4;
    /// Id with no token (`[PAD<id>]`).
    pub const UNUSED: i32 = 5;
    /// SentencePiece byte token.
    pub const BYTE: i32 = 6;
}

/// A vocabulary in the shape GGUF stores it (`tokenizer.ggml.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocab {
    /// Token strings; byte-level tokens use the GPT-2 byte→unicode mapping
    /// (`" the"` → `"Ġthe"`), control/unused tokens are literal text.
    pub tokens: Vec<String>,
    /// Merges `"left right"` in priority order (`"Ġ Ġ"`, …).
    pub merges: Vec<String>,
    /// One [`token_type`] per token.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: u32,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: u32,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad: u32,
}

/// Number of byte-level tokens in o200k_base (ids 0..199_997).
pub const O200K_BASE_TOKENS: u32 = 199_998;
/// Padded o200k_harmony vocabulary size (`gpt-oss.*` embedding rows).
pub const O200K_HARMONY_VOCAB_SIZE: u32 = 201_088;
/// Id after the last named special token: ids 199_998..=200_018 are control
/// tokens; 200_019.. have no token in the HF tokenizer and become `[PAD<id>]`.
const FIRST_UNUSED_ID: u32 = 200_019;

/// The named control tokens of o200k_harmony as HF `tokenizer.json` (and so
/// llama.cpp's converter) defines them; ids missing here in 199_998..=200_018
/// are `<|reserved_<id>|>`.
const NAMED_SPECIALS: [(u32, &str); 10] = [
    (199_998, "<|startoftext|>"),
    (199_999, "<|endoftext|>"),
    (200_002, "<|return|>"),
    (200_003, "<|constrain|>"),
    (200_005, "<|channel|>"),
    (200_006, "<|start|>"),
    (200_007, "<|end|>"),
    (200_008, "<|message|>"),
    (200_012, "<|call|>"),
    (200_018, "<|endofprompt|>"),
];

/// Builds the o200k_harmony vocabulary exactly as llama.cpp's converter writes
/// it into gpt-oss GGUF files, offline from tiktoken-rs's `o200k_base` ranks.
///
/// * ids 0..199_997: o200k_base tokens as GPT-2 unicode strings, NORMAL;
/// * ids 199_998..=200_018: control tokens (named ones from the HF table,
///   the rest `<|reserved_<id>|>`), CONTROL;
/// * ids 200_019..=201_087: `[PAD<id>]`, UNUSED;
/// * merges: for every multi-byte token in rank order, every split
///   `left + right` whose halves are both tokens, sorted by
///   (rank(left), rank(right)) — the HF `TikTokenConverter` rule, 446 189 merges;
/// * bos 199_998, eos 200_002 (`<|return|>`), pad 199_999.
pub fn o200k_harmony_vocab() -> Result<Vocab, TokenizerError> {
    let bpe = tiktoken_rs::o200k_base().map_err(|e| TokenizerError::O200k(e.to_string()))?;
    let mut token_bytes: Vec<Vec<u8>> = Vec::with_capacity(O200K_BASE_TOKENS as usize);
    for rank in 0..O200K_BASE_TOKENS {
        let bytes = bpe
            .decode_bytes(&[rank])
            .map_err(|e| TokenizerError::O200k(format!("rank {rank} missing: {e:?}")))?;
        token_bytes.push(bytes);
    }
    let mut rank_of: FxHashMap<&[u8], u32> = FxHashMap::default();
    rank_of.reserve(token_bytes.len());
    for (rank, bytes) in token_bytes.iter().enumerate() {
        rank_of.insert(bytes.as_slice(), rank as u32);
    }

    let size = O200K_HARMONY_VOCAB_SIZE as usize;
    let mut tokens: Vec<String> = Vec::with_capacity(size);
    let mut token_types: Vec<i32> = Vec::with_capacity(size);
    let mut merges: Vec<String> = Vec::with_capacity(446_189);
    let mut local: Vec<(u32, u32, usize)> = Vec::new();
    for bytes in &token_bytes {
        tokens.push(bytes_to_string(bytes));
        token_types.push(token_type::NORMAL);
        if bytes.len() < 2 {
            continue;
        }
        local.clear();
        for split in 1..bytes.len() {
            let (l, r) = bytes.split_at(split);
            if let (Some(&rl), Some(&rr)) = (rank_of.get(l), rank_of.get(r)) {
                local.push((rl, rr, split));
            }
        }
        local.sort_unstable();
        for &(_, _, split) in &local {
            let (l, r) = bytes.split_at(split);
            let mut m = bytes_to_string(l);
            m.push(' ');
            m.push_str(&bytes_to_string(r));
            merges.push(m);
        }
    }
    for id in O200K_BASE_TOKENS..O200K_HARMONY_VOCAB_SIZE {
        if id < FIRST_UNUSED_ID {
            let name = NAMED_SPECIALS
                .iter()
                .find(|(i, _)| *i == id)
                .map_or_else(|| format!("<|reserved_{id}|>"), |(_, n)| (*n).to_string());
            tokens.push(name);
            token_types.push(token_type::CONTROL);
        } else {
            tokens.push(format!("[PAD{id}]"));
            token_types.push(token_type::UNUSED);
        }
    }
    Ok(Vocab {
        tokens,
        merges,
        token_types,
        bos: 199_998,
        eos: 200_002,
        pad: 199_999,
    })
}
