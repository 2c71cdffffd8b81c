//! Where a model comes from: a path, `tiny` (generated into the cache on first use), or a
//! Hugging Face repo id (fetched with hf-hub into its standard cache).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gpt_engine::synth::{self, SynthSpec};

/// The default Hugging Face repository and file.
pub const DEFAULT_REPO: &str = "ggml-org/gpt-oss-20b-GGUF";
/// The file fetched from [`DEFAULT_REPO`].
pub const DEFAULT_FILE: &str = "gpt-oss-20b-mxfp4.gguf";

/// The cache folder of this tool: `$GPTOSS_CACHE`, else `$XDG_CACHE_HOME/gptoss`, else
/// `~/.cache/gptoss`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("GPTOSS_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("gptoss");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("gptoss")
}

/// Generates the synthetic model `preset` at `path` with a progress line on stderr.
pub fn generate_synthetic(spec: &SynthSpec, path: &Path) -> Result<()> {
    let vocab = gpt_engine::tokenizer::o200k_harmony_vocab()
        .context("building the o200k_harmony vocabulary")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut last = 0u64;
    synth::write_model(spec, &vocab, path, |done, total| {
        let pct = done * 100 / total.max(1);
        if pct >= last + 5 || done == total {
            last = pct;
            eprint!("\rwriting {}: {pct}%", path.display());
        }
    })
    .with_context(|| format!("writing synthetic model {}", path.display()))?;
    eprintln!();
    Ok(())
}

/// Resolves `--model` to a local GGUF path.
pub fn resolve(model: &str) -> Result<PathBuf> {
    let p = Path::new(model);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    if model == "tiny" {
        let spec = SynthSpec::tiny();
        let path = cache_dir().join(format!("tiny-{:016x}.gguf", spec.seed));
        if !path.exists() {
            eprintln!("generating the tiny random-weight model (first use)...");
            generate_synthetic(&spec, &path)?;
        }
        return Ok(path);
    }
    if p.extension().is_some_and(|e| e == "gguf")
        || model.starts_with('.')
        || model.starts_with('/')
    {
        bail!("model file {model} does not exist");
    }
    let (repo, file) = match model.split_once(':') {
        Some((r, f)) => (r.to_string(), f.to_string()),
        None if model == DEFAULT_REPO => (DEFAULT_REPO.to_string(), DEFAULT_FILE.to_string()),
        None => (model.to_string(), DEFAULT_FILE.to_string()),
    };
    fetch_hf(&repo, &file)
}

/// Fetches `file` of `repo` with hf-hub (cached), or explains how to get it by hand.
pub fn fetch_hf(repo: &str, file: &str) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    if let Some(p) = cache.model(repo.to_string()).get(file) {
        return Ok(p);
    }
    eprintln!("downloading {file} from huggingface.co/{repo} ...");
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build();
    let result = api.and_then(|api| api.model(repo.to_string()).get(file));
    match result {
        Ok(p) => Ok(p),
        Err(e) => bail!(
            "could not download {file} from https://huggingface.co/{repo} ({e}).\n\
             Download it on a machine with a network:\n  \
             huggingface-cli download {repo} {file}\n\
             (or `cargo xtask fetch-model {repo}`), then copy it here and pass its path:\n  \
             gptoss run --model /path/to/{file} \"Hello\"\n\
             The Hugging Face cache here is {}.\n\
             To try the engine offline, use the generated tiny model: gptoss run --model tiny \"Hello\"",
            cache.path().display()
        ),
    }
}
