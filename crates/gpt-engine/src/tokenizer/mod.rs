//! o200k_harmony tokenizer: byte-level BPE with tiktoken's o200k pre-tokenizer.
//!
//! * [`Vocab`] is the GGUF-shaped vocabulary (`tokenizer.ggml.*`);
//!   [`o200k_harmony_vocab`] builds gpt-oss's 201 088-entry one offline.
//! * [`Tokenizer`] encodes/decodes; build it from a [`Vocab`], GGUF metadata
//!   ([`Tokenizer::from_gguf_metadata`]) or a HF `tokenizer.json`.
//! * [`StreamDecoder`] turns generated ids into text incrementally, holding
//!   back incomplete UTF-8 sequences.
//!
//! Encoding parity with tiktoken: same regex semantics ([`pretokenize`]),
//! same merge order (the `bpe` module); special tokens (CONTROL / USER_DEFINED types)
//! are matched literally before pre-tokenization only when asked to.

mod bpe;
pub mod byte_level;
mod error;
mod gguf;
mod hf_json;
pub mod pretokenize;
mod stream;
mod vocab;

use std::sync::Mutex;

use regex::Regex;
use rustc_hash::FxHashMap;

use bpe::{BpeModel, NO_RANK};
pub use error::TokenizerError;
use pretokenize::Pretokenizer;
pub use stream::StreamDecoder;
pub use vocab::{
    o200k_harmony_vocab, token_type, Vocab, O200K_BASE_TOKENS, O200K_HARMONY_VOCAB_SIZE,
};

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, TokenizerError>;

/// Pieces cached by the encoder before the cache is cleared.
const CACHE_LIMIT: usize = 1 << 16;

/// Piece bytes → ids, for pieces that needed merging.
type PieceCache = Mutex<FxHashMap<Box<[u8]>, Box<[u32]>>>;

/// A byte-level BPE tokenizer with the o200k pre-tokenizer.
pub struct Tokenizer {
    bpe: BpeModel,
    pre: Pretokenizer,
    /// Vocabulary strings, concatenated: token i is `text[text_offsets[i]..text_offsets[i + 1]]`.
    text: String,
    text_offsets: Vec<usize>,
    token_types: Vec<i32>,
    /// Bytes each id decodes to: `decoded[offsets[i]..offsets[i + 1]]`.
    decoded: Vec<u8>,
    offsets: Vec<usize>,
    /// Vocabulary string → id for tokens that are not NORMAL (NORMAL ones are
    /// found through `bpe.encoder`).
    other_index: FxHashMap<String, u32>,
    /// Literal matcher over CONTROL/USER_DEFINED token texts (longest first).
    special_re: Option<Regex>,
    special_ids: FxHashMap<String, u32>,
    bos: u32,
    eos: u32,
    pad: u32,
    /// Piece bytes → ids for pieces that needed merging.
    cache: PieceCache,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.token_types.len())
            .field("specials", &self.special_ids.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .finish()
    }
}

impl Tokenizer {
    /// Builds a tokenizer from a GGUF-shaped vocabulary.
    ///
    /// NORMAL tokens must be GPT-2 byte-level strings; CONTROL and
    /// USER_DEFINED tokens are matched literally when `parse_special` is set;
    /// every other type only decodes (to its literal text).
    pub fn from_vocab(vocab: &Vocab) -> Result<Self> {
        let n = vocab.tokens.len();
        if u32::try_from(n).is_err() {
            return Err(TokenizerError::TooLarge { len: n });
        }
        if vocab.token_types.len() != n {
            return Err(TokenizerError::LengthMismatch {
                what: "tokenizer.ggml.token_type",
                got: vocab.token_types.len(),
                expected: n,
            });
        }
        for (which, id) in [("bos", vocab.bos), ("eos", vocab.eos), ("pad", vocab.pad)] {
            if id as usize >= n {
                return Err(TokenizerError::SpecialOutOfRange {
                    which,
                    id,
                    vocab_size: n,
                });
            }
        }
        let mut encoder: FxHashMap<Vec<u8>, u32> =
            FxHashMap::with_capacity_and_hasher(n, Default::default());
        let mut decoded = Vec::with_capacity(n * 8);
        let mut offsets = Vec::with_capacity(n + 1);
        let mut text = String::with_capacity(n * 8);
        let mut text_offsets = Vec::with_capacity(n + 1);
        let mut other_index: FxHashMap<String, u32> = FxHashMap::default();
        let mut special_ids: FxHashMap<String, u32> = FxHashMap::default();
        for (i, (tok, &ty)) in vocab.tokens.iter().zip(&vocab.token_types).enumerate() {
            let id = i as u32;
            offsets.push(decoded.len());
            text_offsets.push(text.len());
            text.push_str(tok);
            if ty == token_type::NORMAL {
                let start = decoded.len();
                for ch in tok.chars() {
                    let b = byte_level::char_to_byte(ch).ok_or_else(|| {
                        TokenizerError::NotByteLevel {
                            id,
                            token: tok.clone(),
                            ch,
                        }
                    })?;
                    decoded.push(b);
                }
                let bytes = decoded[start..].to_vec();
                if let Some(first) = encoder.insert(bytes, id) {
                    return Err(TokenizerError::DuplicateToken {
                        first,
                        second: id,
                        bytes: decoded[start..].to_vec(),
                    });
                }
            } else {
                decoded.extend_from_slice(tok.as_bytes());
                other_index.entry(tok.clone()).or_insert(id);
                if (ty == token_type::CONTROL || ty == token_type::USER_DEFINED) && !tok.is_empty()
                {
                    special_ids.entry(tok.clone()).or_insert(id);
                }
            }
        }
        offsets.push(decoded.len());
        text_offsets.push(text.len());

        let rank = merge_ranks(vocab, &encoder)?;
        let special_re = if special_ids.is_empty() {
            None
        } else {
            let mut names: Vec<&str> = special_ids.keys().map(String::as_str).collect();
            // Longest first so that a special that prefixes another never wins.
            names.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
            let alternation: Vec<String> = names.iter().map(|s| regex::escape(s)).collect();
            Some(Regex::new(&alternation.join("|"))?)
        };
        Ok(Self {
            bpe: BpeModel { encoder, rank },
            pre: Pretokenizer::o200k()?,
            text,
            text_offsets,
            token_types: vocab.token_types.clone(),
            decoded,
            offsets,
            other_index,
            special_re,
            special_ids,
            bos: vocab.bos,
            eos: vocab.eos,
            pad: vocab.pad,
            cache: Mutex::new(FxHashMap::default()),
        })
    }

    /// The gpt-oss tokenizer, built from [`o200k_harmony_vocab`].
    pub fn o200k_harmony() -> Result<Self> {
        Self::from_vocab(&o200k_harmony_vocab()?)
    }

    /// Encodes `text`. With `parse_special`, texts of CONTROL/USER_DEFINED
    /// tokens (`<|start|>` …) become their ids; otherwise they are ordinary text.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        match (&self.special_re, parse_special) {
            (Some(re), true) => {
                let mut last = 0;
                for m in re.find_iter(text) {
                    self.encode_ordinary_into(&text[last..m.start()], &mut out)?;
                    // Every match is a key of special_ids by construction.
                    if let Some(&id) = self.special_ids.get(m.as_str()) {
                        out.push(id);
                    }
                    last = m.end();
                }
                self.encode_ordinary_into(&text[last..], &mut out)?;
            }
            _ => self.encode_ordinary_into(text, &mut out)?,
        }
        Ok(out)
    }

    /// Encodes `text` with no special-token parsing, appending to `out`.
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut err = None;
        self.pre.for_each_piece(text, |piece| {
            if err.is_some() {
                return;
            }
            if let Err(e) = self.encode_piece(piece.as_bytes(), out) {
                err = Some(e);
            }
        });
        err.map_or(Ok(()), Err)
    }

    fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) -> Result<()> {
        if let Some(&id) = self.bpe.encoder.get(piece) {
            out.push(id);
            return Ok(());
        }
        if let Ok(cache) = self.cache.lock() {
            if let Some(ids) = cache.get(piece) {
                out.extend_from_slice(ids);
                return Ok(());
            }
        }
        let start = out.len();
        self.bpe
            .encode_piece(piece, out)
            .map_err(|byte| TokenizerError::MissingByte { byte })?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(piece.into(), out[start..].into());
        }
        Ok(())
    }

    /// Bytes that `ids` decode to (special tokens as their text).
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(out)
    }

    /// Decodes `ids` to text; invalid UTF-8 becomes U+FFFD (like tiktoken's
    /// `errors="replace"`); special tokens render as their text.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// The bytes one id decodes to.
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        let i = id as usize;
        if i + 1 >= self.offsets.len() {
            return Err(TokenizerError::UnknownId {
                id,
                vocab_size: self.token_types.len(),
            });
        }
        Ok(&self.decoded[self.offsets[i]..self.offsets[i + 1]])
    }

    /// Id of a token given in vocabulary form (`"Ġthe"`, `"<|start|>"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        if let Some(&id) = self.other_index.get(token) {
            return Some(id);
        }
        let bytes = byte_level::string_to_bytes(token).ok()?;
        self.bpe.encoder.get(&bytes).copied()
    }

    /// Vocabulary form of an id.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        let i = id as usize;
        if i + 1 >= self.text_offsets.len() {
            return None;
        }
        Some(&self.text[self.text_offsets[i]..self.text_offsets[i + 1]])
    }

    /// GGUF token type of an id.
    pub fn token_type(&self, id: u32) -> Option<i32> {
        self.token_types.get(id as usize).copied()
    }

    /// Whether `id` is a CONTROL or USER_DEFINED token.
    pub fn is_special(&self, id: u32) -> bool {
        matches!(
            self.token_type(id),
            Some(token_type::CONTROL | token_type::USER_DEFINED)
        )
    }

    /// Number of ids (including unused ones).
    pub fn vocab_size(&self) -> usize {
        self.token_types.len()
    }

    /// Beginning-of-sequence id (never prepended automatically).
    pub fn bos(&self) -> u32 {
        self.bos
    }

    /// End-of-sequence id.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Padding id.
    pub fn pad(&self) -> u32 {
        self.pad
    }

    /// An incremental decoder over this tokenizer.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }
}

/// Merge rank per token id: index of the first merge producing the token.
fn merge_ranks(vocab: &Vocab, encoder: &FxHashMap<Vec<u8>, u32>) -> Result<Vec<u32>> {
    let mut rank = vec![NO_RANK; vocab.tokens.len()];
    let mut buf: Vec<u8> = Vec::with_capacity(64);
    for (i, merge) in vocab.merges.iter().enumerate() {
        let bad = |reason| TokenizerError::BadMerge {
            index: i,
            merge: merge.clone(),
            reason,
        };
        let (l, r) = merge
            .split_once(' ')
            .ok_or_else(|| bad("no space separator"))?;
        buf.clear();
        for ch in l.chars() {
            buf.push(byte_level::char_to_byte(ch).ok_or_else(|| bad("not byte-level text"))?);
        }
        let mid = buf.len();
        for ch in r.chars() {
            buf.push(byte_level::char_to_byte(ch).ok_or_else(|| bad("not byte-level text"))?);
        }
        if !encoder.contains_key(&buf[..mid]) || !encoder.contains_key(&buf[mid..]) {
            return Err(bad("a side is not a token"));
        }
        let id = *encoder
            .get(buf.as_slice())
            .ok_or_else(|| bad("the concatenation is not a token"))?;
        let slot = &mut rank[id as usize];
        if *slot == NO_RANK {
            *slot = u32::try_from(i).map_err(|_| bad("too many merges"))?;
        }
    }
    Ok(rank)
}
