//! `cargo xtask fetch-model [REPO] [--file F]`: download a GGUF with hf-hub into the standard
//! Hugging Face cache (where `gptoss --model REPO` looks), and nothing else.

use anyhow::{Context, Result};

/// Arguments of `cargo xtask fetch-model`.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Hugging Face repository.
    #[arg(default_value = "ggml-org/gpt-oss-20b-GGUF")]
    repo: String,
    /// File in the repository.
    #[arg(long, default_value = "gpt-oss-20b-mxfp4.gguf")]
    file: String,
}

/// Downloads (or finds in the cache) and prints the local path.
pub fn fetch_model(a: &FetchArgs) -> Result<()> {
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .context("setting up the Hugging Face client")?;
    let path = api.model(a.repo.clone()).get(&a.file).with_context(|| {
        format!(
            "downloading {} from https://huggingface.co/{}",
            a.file, a.repo
        )
    })?;
    println!("{}", path.display());
    Ok(())
}
