//! Tokenizer parity with tiktoken (fixtures from PyPI `tiktoken`, see
//! `fixtures/make_tokenizer_fixtures.py`) and with tiktoken-rs on random text.

use std::sync::OnceLock;
use std::time::Instant;

use gguf_format::{Array, Metadata, Value};
use gpt_engine::tokenizer::{o200k_harmony_vocab, token_type, Tokenizer, Vocab};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value as Json;

fn vocab() -> &'static Vocab {
    static V: OnceLock<Vocab> = OnceLock::new();
    V.get_or_init(|| {
        let t = Instant::now();
        let v = o200k_harmony_vocab().expect("build o200k_harmony vocab");
        eprintln!("o200k_harmony_vocab() took {:?}", t.elapsed());
        v
    })
}

fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let t = Instant::now();
        let tok = Tokenizer::from_vocab(vocab()).expect("tokenizer from vocab");
        eprintln!("Tokenizer::from_vocab took {:?}", t.elapsed());
        tok
    })
}

fn reference() -> &'static tiktoken_rs::CoreBPE {
    tiktoken_rs::o200k_base_singleton()
}

fn fixture(name: &str) -> Json {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn cases(j: &Json, key: &str) -> Vec<(String, Vec<u32>)> {
    j[key]
        .as_array()
        .expect("case array")
        .iter()
        .map(|c| {
            let text = c["text"].as_str().expect("text").to_string();
            let ids = c["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect();
            (text, ids)
        })
        .collect()
}

/// FNV-1a 64 over each string followed by `\n` (same as the fixture script).
fn fnv1a64<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for s in items {
        for &b in s.as_bytes().iter().chain(std::iter::once(&b'\n')) {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

#[test]
fn vocab_matches_the_gguf_converter_layout() {
    let j = fixture("tokenizer_o200k.json");
    let exp = &j["vocab"];
    let v = vocab();
    assert_eq!(v.tokens.len() as u64, exp["n_tokens"].as_u64().unwrap());
    assert_eq!(v.tokens.len(), 201_088);
    assert_eq!(v.token_types.len(), 201_088);
    assert_eq!(v.merges.len() as u64, exp["n_merges"].as_u64().unwrap());
    assert_eq!(v.merges.len(), 446_189);
    assert_eq!(fnv1a64(&v.tokens), exp["tokens_fnv1a64"].as_str().unwrap());
    assert_eq!(fnv1a64(&v.merges), exp["merges_fnv1a64"].as_str().unwrap());
    for (ty, count) in exp["token_types_counts"].as_object().unwrap() {
        let ty: i32 = ty.parse().unwrap();
        let got = v.token_types.iter().filter(|&&t| t == ty).count() as u64;
        assert_eq!(got, count.as_u64().unwrap(), "token type {ty}");
    }
    for s in exp["sample_tokens"].as_array().unwrap() {
        let i = s[0].as_u64().unwrap() as usize;
        assert_eq!(v.tokens[i], s[1].as_str().unwrap(), "token {i}");
    }
    for s in exp["sample_merges"].as_array().unwrap() {
        let i = s[0].as_u64().unwrap() as usize;
        assert_eq!(v.merges[i], s[1].as_str().unwrap(), "merge {i}");
    }
    assert_eq!((v.bos, v.eos, v.pad), (199_998, 200_002, 199_999));
    assert_eq!(v.tokens[200_006], "<|start|>");
    assert_eq!(v.tokens[200_012], "<|call|>");
    assert_eq!(v.token_types[200_007], token_type::CONTROL);
}

#[test]
fn corpus_matches_tiktoken_ordinary() {
    let j = fixture("tokenizer_o200k.json");
    let tok = tokenizer();
    for (text, ids) in cases(&j, "ordinary") {
        let got = tok.encode(&text, false).unwrap();
        assert_eq!(got, ids, "encode {text:?}");
        // Specials are never parsed in this corpus unless asked; with parsing
        // on, lines without special texts must not change.
        if !text.contains("<|") {
            assert_eq!(
                tok.encode(&text, true).unwrap(),
                ids,
                "parse_special {text:?}"
            );
        }
        assert_eq!(tok.decode(&got).unwrap(), text, "round trip {text:?}");
    }
}

#[test]
fn corpus_matches_tiktoken_with_specials() {
    let j = fixture("tokenizer_o200k.json");
    let tok = tokenizer();
    for (text, ids) in cases(&j, "special") {
        let got = tok.encode(&text, true).unwrap();
        assert_eq!(got, ids, "encode special {text:?}");
        assert_eq!(tok.decode(&got).unwrap(), text, "round trip {text:?}");
        // With parsing off the same text is ordinary text.
        let plain = tok.encode(&text, false).unwrap();
        assert_eq!(plain, reference().encode_ordinary(&text), "{text:?}");
        assert!(plain.iter().all(|&id| id < 199_998), "{text:?}");
    }
}

#[test]
fn special_tokens_lookup() {
    let tok = tokenizer();
    for (name, id) in [
        ("<|return|>", 200_002),
        ("<|constrain|>", 200_003),
        ("<|channel|>", 200_005),
        ("<|start|>", 200_006),
        ("<|end|>", 200_007),
        ("<|message|>", 200_008),
        ("<|call|>", 200_012),
    ] {
        assert_eq!(tok.token_to_id(name), Some(id));
        assert_eq!(tok.id_to_token(id), Some(name));
        assert!(tok.is_special(id));
        assert_eq!(tok.encode(name, true).unwrap(), vec![id]);
        assert_eq!(tok.decode(&[id]).unwrap(), name);
    }
    assert_eq!(tok.token_to_id("Ġthe"), Some(290));
    assert_eq!(tok.decode(&[290]).unwrap(), " the");
    assert_eq!(tok.vocab_size(), 201_088);
    assert!(tok.decode(&[201_088]).is_err());
    // Unused ids decode to their placeholder text and are never produced.
    assert_eq!(tok.decode(&[200_019]).unwrap(), "[PAD200019]");
    assert!(!tok.encode("[PAD200019]", true).unwrap().contains(&200_019));
}

/// Random text from a pool that stresses every regex branch.
fn random_text(rng: &mut StdRng, max_chars: usize) -> String {
    const POOL: &[&str] = &[
        "a", "b", "z", "A", "Z", "e", "s", "t", "'", "'", "’", " ", " ", " ", "  ", "\t", "\n",
        "\r", "\r\n", "0", "1", "9", ".", ",", "!", "?", "/", "-", "_", "(", ")", "\"", "#", "@",
        "é", "É", "ß", "ſ", "\u{212A}", "İ", "ı", "ǅ", "ж", "Ж", "λ", "Λ", "ש", "ع", "न", "ि", "्",
        "ก", "่", "中", "文", "日", "本", "한", "ー", "😀", "👍", "🏽", "\u{200d}", "🇺", "🇸",
        "\u{301}", "\u{308}", "\u{a0}", "\u{3000}", "\u{2009}", "\u{85}", "\u{2028}", "٣", "²",
        "Ⅻ", "\u{feff}", "\u{1}", "\u{7f}", "s'", "'S", "'ll", "'LL", "'Re", "'d", "'m",
    ];
    let n = rng.random_range(0..=max_chars);
    let mut s = String::new();
    for _ in 0..n {
        if rng.random_bool(0.08) {
            // Any scalar value, biased to the BMP.
            let cp = if rng.random_bool(0.8) {
                rng.random_range(0x20..0x1_0000)
            } else {
                rng.random_range(0x1_0000..0x11_0000)
            };
            if let Some(c) = char::from_u32(cp) {
                s.push(c);
            }
        } else {
            s.push_str(POOL[rng.random_range(0..POOL.len())]);
        }
    }
    s
}

#[test]
fn random_text_matches_tiktoken_rs_and_round_trips() {
    let seed: u64 = rand::rng().random();
    let mut rng = StdRng::seed_from_u64(seed);
    let tok = tokenizer();
    for case in 0..3000 {
        let text = random_text(&mut rng, 48);
        let got = tok.encode(&text, false).unwrap();
        let want = reference().encode_ordinary(&text);
        assert_eq!(got, want, "seed {seed} case {case}: {text:?}");
        assert_eq!(tok.decode(&got).unwrap(), text, "seed {seed} case {case}");
    }
}

#[test]
fn long_pieces_match_tiktoken_rs() {
    // Pieces ≥ 128 bytes take the heap merge path.
    let seed: u64 = rand::rng().random();
    let mut rng = StdRng::seed_from_u64(seed);
    let tok = tokenizer();
    let units = ["a", "ab", "é", "=", "-=", "😀", "zq", "ー", "\u{301}", "xY"];
    for case in 0..200 {
        let mut text = String::new();
        for _ in 0..rng.random_range(40..400) {
            text.push_str(units[rng.random_range(0..units.len())]);
            if rng.random_bool(0.3) {
                // runs of one unit make many equal-rank pairs (tie order)
                let u = units[rng.random_range(0..units.len())];
                text.push_str(&u.repeat(rng.random_range(2..20)));
            }
        }
        let got = tok.encode(&text, false).unwrap();
        assert_eq!(
            got,
            reference().encode_ordinary(&text),
            "seed {seed} case {case}: {text:?}"
        );
    }
}

#[test]
fn stream_decoder_reassembles_text() {
    let j = fixture("tokenizer_o200k.json");
    let tok = tokenizer();
    for (text, ids) in cases(&j, "ordinary") {
        let mut dec = tok.stream_decoder();
        let mut out = String::new();
        for &id in &ids {
            if let Some(s) = dec.push(id).unwrap() {
                assert!(!s.contains('\u{FFFD}'), "partial char emitted for {text:?}");
                out.push_str(&s);
            }
        }
        assert!(!dec.has_pending(), "{text:?}");
        assert_eq!(dec.flush(), None);
        assert_eq!(out, text);
    }
    // A lone continuation byte token is invalid: replaced, never held forever.
    let lone = tok
        .token_to_id(&gpt_engine::tokenizer::byte_level::bytes_to_string(&[0x80]))
        .unwrap();
    let mut dec = tok.stream_decoder();
    let s = dec.push(lone).unwrap();
    assert_eq!(s.as_deref(), Some("\u{FFFD}"));
    // A truncated multi-byte char is flushed lossily.
    let e_ids = tok.encode("😀", false).unwrap();
    if e_ids.len() > 1 {
        let mut dec = tok.stream_decoder();
        assert_eq!(dec.push(e_ids[0]).unwrap(), None);
        assert!(dec.has_pending());
        assert_eq!(dec.flush().as_deref(), Some("\u{FFFD}"));
    }
}

#[test]
fn tiny_tokenizer_json_matches_tiktoken() {
    let path = format!(
        "{}/tests/fixtures/tokenizer_tiny.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let tok = Tokenizer::from_tokenizer_json(&path).unwrap();
    assert_eq!(tok.vocab_size(), 3004);
    assert_eq!((tok.bos(), tok.eos(), tok.pad()), (3000, 3002, 3001));
    let j = fixture("tokenizer_tiny_expected.json");
    for (text, ids) in cases(&j, "ordinary") {
        assert_eq!(tok.encode(&text, false).unwrap(), ids, "tiny {text:?}");
    }
    for (text, ids) in cases(&j, "special") {
        let got = tok.encode(&text, true).unwrap();
        assert_eq!(got, ids, "tiny special {text:?}");
        assert_eq!(tok.decode(&got).unwrap(), text);
    }
}

#[test]
fn tokenizer_json_errors_are_typed() {
    let dir = std::env::temp_dir().join(format!("gpt-engine-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"model\": {\"type\": \"Unigram\"}}").unwrap();
    let err = Tokenizer::from_tokenizer_json(&bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not BPE"), "{err}");
    assert!(Tokenizer::from_tokenizer_json(dir.join("missing.json")).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn from_gguf_metadata_equals_from_vocab() {
    let v = vocab();
    let mut md = Metadata::new();
    let put = |md: &mut Metadata, k: &str, val: Value| md.insert(k.to_string(), val).unwrap();
    put(
        &mut md,
        "tokenizer.ggml.model",
        Value::String("gpt2".into()),
    );
    put(
        &mut md,
        "tokenizer.ggml.tokens",
        Value::Array(Array::String(v.tokens.clone())),
    );
    put(
        &mut md,
        "tokenizer.ggml.token_type",
        Value::Array(Array::I32(v.token_types.clone())),
    );
    put(
        &mut md,
        "tokenizer.ggml.merges",
        Value::Array(Array::String(v.merges.clone())),
    );
    put(&mut md, "tokenizer.ggml.bos_token_id", Value::U32(v.bos));
    put(&mut md, "tokenizer.ggml.eos_token_id", Value::U32(v.eos));
    put(
        &mut md,
        "tokenizer.ggml.padding_token_id",
        Value::U32(v.pad),
    );
    let tok = Tokenizer::from_gguf_metadata(&md).unwrap();
    let text = "GGUF metadata: Hello, мир! 😀 <|start|>assistant";
    assert_eq!(
        tok.encode(text, true).unwrap(),
        tokenizer().encode(text, true).unwrap()
    );
    assert_eq!(
        (tok.bos(), tok.eos(), tok.pad()),
        (199_998, 200_002, 199_999)
    );

    let mut wrong = Metadata::new();
    put(
        &mut wrong,
        "tokenizer.ggml.model",
        Value::String("llama".into()),
    );
    let err = Tokenizer::from_gguf_metadata(&wrong)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.ggml.model"), "{err}");
}

#[test]
fn malformed_vocab_is_rejected() {
    let base = Vocab {
        tokens: vec!["a".into(), "b".into(), "ab".into()],
        merges: vec!["a b".into()],
        token_types: vec![1, 1, 1],
        bos: 0,
        eos: 0,
        pad: 0,
    };
    assert!(Tokenizer::from_vocab(&base).is_ok());
    let mut v = base.clone();
    v.merges = vec!["a c".into()];
    assert!(Tokenizer::from_vocab(&v)
        .unwrap_err()
        .to_string()
        .contains("merge #0"));
    let mut v = base.clone();
    v.token_types.pop();
    assert!(Tokenizer::from_vocab(&v).is_err());
    let mut v = base.clone();
    v.tokens[1] = " ".into(); // a raw space is not a GPT-2 byte-level char
    assert!(Tokenizer::from_vocab(&v).is_err());
    let mut v = base.clone();
    v.eos = 7;
    assert!(Tokenizer::from_vocab(&v).is_err());
    // Bytes without a single-byte token cannot be encoded.
    let tok = Tokenizer::from_vocab(&base).unwrap();
    assert_eq!(tok.encode("abab", false).unwrap(), vec![2, 2]);
    assert!(tok.encode("abc", false).is_err());
}
