//! `gptoss parse` on the peer fixtures of `scripts/reference/harmony_parse/make_fixtures.py`:
//! completions from openai-harmony's own tests and llama.cpp's gpt-oss chat-parser tests,
//! whose expected messages are what openai-harmony's `StreamableParser` gives (strict and
//! non-strict, whole and unfinished), plus llama.cpp's expected answers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value as Json;

fn tmp() -> PathBuf {
    let d =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("parse-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `gptoss ARGS`: exit code, stdout, stderr.
fn gptoss(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_gptoss"))
        .args(args)
        .env("GPTOSS_CACHE", tmp().join("cache"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn model() -> &'static str {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        let p = tmp().join("tiny.gguf");
        let (code, _, err) = gptoss(&[
            "gen-model",
            "--preset",
            "tiny",
            "--out",
            p.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        p
    })
    .to_str()
    .unwrap()
}

fn cases() -> Vec<Json> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/harmony_parse");
    ["openai_harmony.json", "llama_cpp.json"]
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            let v: Json = serde_json::from_str(&text).unwrap();
            v["cases"].as_array().unwrap().clone()
        })
        .collect()
}

struct Job {
    case: Json,
    mode: &'static str,
    partial: bool,
    want: Json,
}

/// `gptoss parse` of the whole token list of `job.case`; the JSON it printed, or the error.
fn run(job: &Job) -> Result<Json, String> {
    let tokens: Vec<String> = job.case["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let tokens = tokens.join(",");
    let mut args = vec!["parse", "--model", model(), "--tokens", &tokens, "--json"];
    args.extend(["--role", job.case["role"].as_str().unwrap()]);
    match job.mode {
        "non_strict" => args.push("--non-strict"),
        "lenient" => args.push("--lenient"),
        _ => {}
    }
    if job.partial {
        args.push("--partial");
    }
    let (code, out, err) = gptoss(&args);
    match code {
        0 => serde_json::from_str(&out).map_err(|e| format!("bad JSON ({e}): {out}")),
        1 if err.starts_with("error: ") && out.is_empty() => Err(err),
        _ => panic!("gptoss {args:?}: exit {code}\n{err}"),
    }
}

/// The problems with one job's output (empty when it matches).
fn check(job: &Job, got: Result<Json, String>) -> Vec<String> {
    let at = format!("{} {} partial={}", job.case["name"], job.mode, job.partial);
    let mut bad = Vec::new();
    let want = &job.want;
    let got = match (got, want["ok"].as_bool().unwrap()) {
        (Err(_), false) => return bad,
        (Ok(g), false) => {
            return vec![format!(
                "{at}: openai-harmony fails ({}), we print {g}",
                want["error"]
            )]
        }
        (Err(e), true) => return vec![format!("{at}: {e}")],
        (Ok(g), true) => g,
    };
    if got["messages"] != want["messages"] {
        bad.push(format!(
            "{at}: messages\n  ours {}\n  peer {}",
            got["messages"], want["messages"]
        ));
    }
    // openai-harmony's current content ("" between messages); after invalid UTF-8 its
    // unfinished text may lag a token behind ours, so only whether there is one is compared.
    let ours = got["current_content"].as_str();
    let peer = want["current"]["content"].as_str();
    let same = if job.case.get("invalid_utf8").is_some() {
        ours.is_some() == peer.is_some()
    } else {
        ours.unwrap_or("") == peer.unwrap_or("")
    };
    if !same {
        bad.push(format!("{at}: current_content {ours:?} vs {peer:?}"));
    }
    // The streamed deltas add up to the final view.
    for field in ["content", "reasoning_content", "tool_calls"] {
        if got["deltas_joined"][field] != got[field] {
            bad.push(format!(
                "{at}: deltas_joined.{field} {} vs {}",
                got["deltas_joined"][field], got[field]
            ));
        }
    }
    if let Some(ll) = job.case.get("llama_cpp") {
        if ll["partial"].as_bool() == Some(job.partial) {
            for field in ["content", "reasoning_content", "tool_calls"] {
                if got[field] != ll[field] {
                    bad.push(format!(
                        "{at}: {field} {} vs llama.cpp {}",
                        got[field], ll[field]
                    ));
                }
            }
        }
    }
    bad
}

fn jobs() -> Vec<Job> {
    let mut jobs = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let n = case["tokens"].as_array().unwrap().len() as u64;
        for p in case["parses"].as_array().unwrap() {
            if p["len"].as_u64() != Some(n) {
                continue; // prefixes: gpt-engine's tests/harmony_parse.rs
            }
            // Where both modes agree, alternate which one runs.
            let modes = p["modes"].as_array().unwrap();
            let mode = if modes[i % modes.len()] == "strict" {
                "strict"
            } else {
                "non_strict"
            };
            jobs.push(Job {
                case: case.clone(),
                mode,
                partial: p["partial"].as_bool().unwrap(),
                want: p.clone(),
            });
        }
        if let Some(l) = case.get("lenient") {
            let want = serde_json::json!({"ok": true, "messages": l["messages"], "current": null});
            jobs.push(Job {
                case: case.clone(),
                mode: "lenient",
                partial: false,
                want,
            });
        }
    }
    jobs
}

#[test]
fn parse_matches_openai_harmony_and_llama_cpp() {
    model();
    let jobs = jobs();
    assert!(jobs.len() > 100, "{}", jobs.len());
    assert!(jobs.iter().any(|j| j.mode == "non_strict"));
    assert!(jobs.iter().any(|j| j.case["role"] == "none"));
    let half = jobs.len() / 2;
    let bad: Vec<String> = std::thread::scope(|s| {
        let parts: Vec<_> = [&jobs[..half], &jobs[half..]]
            .into_iter()
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .flat_map(|j| check(j, run(j)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(
        bad.is_empty(),
        "{} problems:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn lenient_output_has_no_special_token_text() {
    for case in cases().into_iter().filter(|c| c.get("lenient").is_some()) {
        let job = Job {
            case,
            mode: "lenient",
            partial: true,
            want: Json::Null,
        };
        let got = run(&job).unwrap();
        for field in ["content", "reasoning_content"] {
            let s = got[field].as_str().unwrap();
            assert!(!s.contains("<|"), "{}: {field} {s:?}", job.case["name"]);
        }
        for m in got["messages"].as_array().unwrap() {
            assert!(!m["content"].as_str().unwrap().contains("<|"), "{m}");
        }
        assert!(
            got["recoveries"].as_u64().unwrap() > 0,
            "{}",
            job.case["name"]
        );
    }
}

#[test]
fn bad_input_is_one_error_line() {
    for tokens in ["1,x", "-3", "99999999999"] {
        let (code, out, err) = gptoss(&["parse", "--model", model(), "--tokens", tokens, "--json"]);
        assert_eq!(code, 1, "{tokens}: {err}");
        assert!(out.is_empty());
        assert!(
            err.starts_with("error: ") && err.contains("--tokens"),
            "{err}"
        );
    }
    // A completion that ends inside its first header, strict: an error naming the cause.
    let (code, _, err) = gptoss(&[
        "parse",
        "--model",
        model(),
        "--tokens",
        "200005,35644",
        "--json",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("header"), "{err}");
    // The same, unfinished, is fine: nothing parsed yet.
    let (code, out, err) = gptoss(&[
        "parse",
        "--model",
        model(),
        "--tokens",
        "200005,35644",
        "--partial",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"], serde_json::json!([]));
    assert_eq!(v["current_content"], Json::Null);
}
