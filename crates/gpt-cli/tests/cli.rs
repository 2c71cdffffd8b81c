//! The `gptoss` binary on a generated tiny model: each command runs, prints what it promises,
//! and bad input gives one `error: ...` line and exit code 1.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn tmp() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn gptoss(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gptoss"))
        .args(args)
        .env("GPTOSS_CACHE", tmp().join("cache"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> (String, String) {
    let o = gptoss(args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    );
    assert!(o.status.success(), "gptoss {args:?} failed:\n{err}");
    (out, err)
}

fn model() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let p = tmp().join("tiny.gguf");
        ok(&[
            "gen-model",
            "--preset",
            "tiny",
            "--out",
            p.to_str().unwrap(),
        ]);
        p
    })
}

fn m() -> &'static str {
    model().to_str().unwrap()
}

#[test]
fn inspect_json_lists_every_tensor() {
    let (out, _) = ok(&["inspect", m(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["version"], 3);
    assert_eq!(v["tensors"].as_array().unwrap().len(), 3 + 19 * 4);
    assert_eq!(v["metadata"]["tokenizer.ggml.tokens"]["len"], 201088);
    let q = v["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "blk.0.ffn_gate_exps.weight")
        .unwrap();
    assert_eq!(q["type"], "MXFP4");
    assert_eq!(q["type_id"], 39);
    assert_eq!(q["dims"], serde_json::json!([64, 96, 4]));
}

#[test]
fn inspect_check_and_dump() {
    let (out, _) = ok(&["inspect", m(), "--check"]);
    assert!(out.contains("79 checked"), "{out}");
    assert!(out.contains("memory plan"), "{out}");
    let npy = tmp().join("q.npy");
    ok(&[
        "inspect",
        m(),
        "--dump",
        "blk.0.attn_q.weight",
        "--out",
        npy.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&npy).unwrap();
    let header = String::from_utf8_lossy(&bytes[10..80]);
    assert!(header.contains("'shape': (128, 64)"), "{header}");
    assert_eq!(
        bytes.len() - (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        128 * 64 * 4
    );
}

#[test]
fn logits_have_shape_t_by_vocab() {
    let npy = tmp().join("l.npy");
    ok(&[
        "logits",
        "--model",
        m(),
        "--tokens",
        "1,2,3,200006",
        "--out",
        npy.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let bytes = std::fs::read(&npy).unwrap();
    assert!(String::from_utf8_lossy(&bytes[10..90]).contains("'shape': (4, 201088)"));
}

/// `gen-model --split-max-size` writes a set like the published multi-file models; any shard's
/// name loads the whole model, with the same logits as the single file.
#[test]
fn split_model_loads_from_any_shard_with_the_same_logits() {
    let dir = tmp().join("split");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("tiny.gguf");
    let (_, err) = ok(&[
        "gen-model",
        "--preset",
        "tiny",
        "--out",
        out.to_str().unwrap(),
        "--split-max-size",
        "10M",
    ]);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    // The 201,088 x 64 Q8_0 embedding and output matrices (13.7 MB each) get shards of their own.
    assert!(names.len() >= 3, "{names:?}\n{err}");
    let n = names.len();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(*name, format!("tiny-{:05}-of-{n:05}.gguf", i + 1));
    }
    let logits = |model: &str, npy: &Path| {
        let args = [
            "logits",
            "--model",
            model,
            "--tokens",
            "5,17,200006,9",
            "--device",
            "cpu",
        ];
        let mut args: Vec<&str> = args.to_vec();
        args.extend(["--out", npy.to_str().unwrap()]);
        ok(&args);
        std::fs::read(npy).unwrap()
    };
    let single = logits(m(), &dir.join("single.npy"));
    let last = dir.join(&names[n - 1]);
    let split = logits(last.to_str().unwrap(), &dir.join("split.npy"));
    assert_eq!(single, split, "a split set must hold the same model");
    let (out, _) = ok(&["inspect", last.to_str().unwrap(), "--check"]);
    assert!(out.contains("79 checked"), "{out}");
    let bad = dir.join("bad.gguf");
    let e = gptoss(&[
        "gen-model",
        "--out",
        bad.to_str().unwrap(),
        "--split-max-size",
        "3X",
    ]);
    assert!(!e.status.success());
    assert!(String::from_utf8_lossy(&e.stderr).contains("unknown unit"));
}

#[test]
fn tokenize_and_render() {
    let (out, _) = ok(&[
        "tokenize",
        "--model",
        m(),
        "--text",
        "Hello world",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // o200k: "Hello" = 13225, " world" = 2375 (tiktoken's ids, also in the tokenizer fixtures).
    assert_eq!(v["ids"], serde_json::json!([13225, 2375]));
    let req = tmp().join("req.json");
    std::fs::write(
        &req,
        r#"{"messages":[{"role":"user","content":"What is 2 + 2?"}]}"#,
    )
    .unwrap();
    let (out, _) = ok(&[
        "render",
        "--model",
        m(),
        "--request",
        req.to_str().unwrap(),
        "--date",
        "2025-08-05",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = v["text"].as_str().unwrap();
    assert!(
        text.starts_with("<|start|>system<|message|>You are ChatGPT"),
        "{text}"
    );
    assert!(text.contains("Current date: 2025-08-05"));
    assert!(
        text.ends_with("<|start|>user<|message|>What is 2 + 2?<|end|><|start|>assistant"),
        "{text}"
    );
    let ids = v["ids"].as_array().unwrap();
    assert_eq!(ids[ids.len() - 2], 200006);
    assert_eq!(ids[ids.len() - 1], 173781);
}

#[test]
fn run_generates_and_reports_speed() {
    let (_, err) = ok(&[
        "run",
        "--model",
        m(),
        "--max-tokens",
        "5",
        "--seed",
        "3",
        "--device",
        "cpu",
        "Hi",
    ]);
    assert!(err.contains("5 generated"), "{err}");
    assert!(err.contains("time to first token"), "{err}");
    let raw = [
        "run",
        "--model",
        m(),
        "--raw",
        "--max-tokens",
        "6",
        "--seed",
        "9",
        "--device",
        "cpu",
        "Hello",
    ];
    let (out1, _) = ok(&raw);
    let (out2, _) = ok(&raw);
    assert_eq!(out1, out2, "same seed, same tokens");
}

#[test]
fn errors_are_one_line_and_exit_1() {
    let bad = tmp().join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00\xff\xff").unwrap();
    let o = gptoss(&["inspect", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error: "), "{err}");
    let long = "word ".repeat(200);
    let o = gptoss(&[
        "run",
        "--model",
        m(),
        "--ctx",
        "64",
        "--device",
        "cpu",
        &long,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not fit the context of 64"));
    let o = gptoss(&["run", "--model", "/nonexistent/model.gguf", "Hi"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
}

#[test]
fn chat_keeps_the_cache_between_turns() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gptoss"))
        .args([
            "chat",
            "--model",
            m(),
            "--max-tokens",
            "4",
            "--seed",
            "1",
            "--device",
            "cpu",
        ])
        .env("RUST_BACKTRACE", "0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello there\nAnd again\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let prompts: Vec<usize> = err
        .lines()
        .filter_map(|l| {
            l.split('[')
                .nth(1)?
                .split(" prompt tokens")
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(prompts.len(), 2, "{err}");
    // Turn 2 computes only its own tokens (<|end|> + the user message + <|start|>assistant)
    // and what follows the last whole 16-token block of turn 1, not the system message again.
    assert!(prompts[1] < 20 + 16 && prompts[0] > 50, "{prompts:?}");
}

#[test]
fn logits_of_an_hf_checkpoint_directory() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gpt-weights/tests/fixtures/hf_tiny");
    let npy = tmp().join("hf.npy");
    ok(&[
        "logits",
        "--model",
        dir.to_str().unwrap(),
        "--tokens",
        "1,2",
        "--out",
        npy.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    let bytes = std::fs::read(&npy).unwrap();
    assert!(String::from_utf8_lossy(&bytes[10..90]).contains("'shape': (2, 1024)"));
}

/// `compare-devices` against the CPU itself: the flow runs (prefill, token-by-token decode
/// against one prefill, greedy steps) and the CPU agrees with itself within the consistency
/// bound (token-by-token decode sums in another order than one prefill).
#[test]
fn compare_devices_runs_its_three_checks() {
    let (out, err) = ok(&[
        "compare-devices",
        "--model",
        m(),
        "--device",
        "cpu",
        "--prompt-tokens",
        "9",
        "--decode-tokens",
        "12",
        "--steps",
        "6",
    ]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["fast_decode"], false);
    assert_eq!(v["greedy_agree"], 6);
    assert!(v["divergence"].is_null(), "{v}");
    assert!(v["worst_rel_l2"].as_f64().unwrap() <= 1e-5, "{v}");
    assert!(v["decode_worst_rel_l2"].as_f64().unwrap() <= 1e-5, "{v}");
    assert!(err.contains("6/6 greedy tokens equal"), "{err}");
}

#[test]
fn bench_concurrency_prints_one_object_per_level() {
    let (out, _) = ok(&[
        "bench",
        "--model",
        m(),
        "--device",
        "cpu",
        "--prompt-tokens",
        "8",
        "--gen-tokens",
        "6",
        "--reps",
        "1",
        "--concurrency",
        "1,3",
        "--json",
    ]);
    let levels: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(levels.len(), 2, "{out}");
    for (v, n) in levels.iter().zip([1, 3]) {
        assert_eq!(v["concurrency"], n);
        for key in [
            "prefill_tok_s",
            "decode_tok_s",
            "decode_tok_s_per_seq",
            "ttft_ms",
        ] {
            let x = v[key].as_f64().unwrap_or(-1.0);
            assert!(x > 0.0, "{key} = {x} at concurrency {n}");
        }
    }
}
