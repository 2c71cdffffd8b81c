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
    generate_synthetic_vocab(spec, path, None, Default::default()).map(|_| ())
}

/// [`generate_synthetic`] with the vocabulary cut to its first `vocab_size` tokens (small
/// embedding tables for fixtures; the tokenizer of such a file is not usable), split into
/// shards by `split`. Returns the files written.
pub fn generate_synthetic_vocab(
    spec: &SynthSpec,
    path: &Path,
    vocab_size: Option<usize>,
    split: gguf_format::SplitPolicy,
) -> Result<Vec<PathBuf>> {
    let mut vocab = gpt_engine::tokenizer::o200k_harmony_vocab()
        .context("building the o200k_harmony vocabulary")?;
    if let Some(n) = vocab_size {
        anyhow::ensure!(
            n > 0 && n <= vocab.tokens.len(),
            "--vocab-size must be in 1..={}",
            vocab.tokens.len()
        );
        vocab.tokens.truncate(n);
        vocab.token_types.truncate(n);
        vocab.merges.truncate(n.min(1000));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut last = 0u64;
    let paths = synth::write_model_split(spec, &vocab, path, split, |done, total| {
        let pct = done * 100 / total.max(1);
        if pct >= last + 5 || done == total {
            last = pct;
            eprint!("\rwriting {}: {pct}%", path.display());
        }
    })
    .with_context(|| format!("writing synthetic model {}", path.display()))?;
    eprintln!();
    Ok(paths)
}

/// A progress bar on stderr for [`gpt_engine::loader::load_model`]'s `(done, total)` bytes.
pub fn load_progress() -> impl FnMut(u64, u64) {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    move |done, total| {
        bar.set_length(total);
        bar.set_position(done);
        if done >= total {
            bar.finish_and_clear();
        }
    }
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
        Ok(p) => {
            eprintln!("checking the sha256 of {} ...", p.display());
            verify_blob(&p)?;
            Ok(p)
        }
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

/// Checks a file fetched by hf-hub against its checksum: large (LFS) files are stored as blobs
/// named by the sha256 of their content (the hub's etag), so the name is the expected hash.
/// Files whose blob name is not a sha256 (small git files) are not checked.
pub fn verify_blob(path: &Path) -> Result<()> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let real =
        std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))?;
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    let mut f =
        std::fs::File::open(&real).with_context(|| format!("opening {}", real.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", real.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if got != name {
        bail!(
            "checksum mismatch for {}: sha256 {got}, expected {name}; delete it and download again",
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    #[test]
    fn blob_checksums_are_verified() {
        let dir = std::env::temp_dir().join(format!("blobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let hash: String = Sha256::digest(&data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let good = dir.join(&hash);
        std::fs::write(&good, &data).unwrap();
        super::verify_blob(&good).unwrap();
        let mut bad = data.clone();
        bad[1_234_567] ^= 1;
        std::fs::write(&good, &bad).unwrap();
        let e = super::verify_blob(&good).unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        // Not a sha256-named blob: not checked.
        let other = dir.join("config.json");
        std::fs::write(&other, b"{}").unwrap();
        super::verify_blob(&other).unwrap();
    }
}
