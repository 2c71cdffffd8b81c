//! `cargo xtask cuda-build`: release CUDA binaries built on a machine without a GPU.
//!
//! Steps: find or install a CUDA 13.0 toolkit ([`crate::cuda_toolkit`]); pick the target GPUs
//! ([`crate::cuda_arch`]: `--arch`, else the cards found, else Ampere to Blackwell); build the gpt-kernels
//! CUDA test binaries (`cargo test -p gpt-kernels --features cuda --release --no-run`), then
//! `gptoss` (`-p gpt-cli --features cuda --release`) into the separate target
//! folder `target/cuda`; strip them into `--bin-dir`; print the stripped `gptoss` path last.
//!
//! Link search paths: candle's cudarc (feature `dynamic-linking`) emits
//! `rustc-link-search=native=$CUDA_HOME/{lib,lib/stubs,lib64,..}` (existing folders only) from
//! its own build script, which reruns only when `CUDA_HOME`/`CUDA_PATH`/`CUDA_ROOT`/
//! `CUDA_TOOLKIT_ROOT_DIR` change. So this task sets `CUDA_HOME` to the same folder every time,
//! clears the other three and does not touch `RUSTFLAGS`: nothing forces a rebuild of the
//! dependency tree between runs.

use crate::cuda_arch;
use crate::cuda_toolkit::{self, Toolkit};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Arguments of `cargo xtask cuda-build`.
#[derive(Debug, clap::Args)]
pub struct CudaBuildArgs {
    /// Folder for the stripped binaries (default: `target/cuda/dist`).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Compute capabilities to build for, e.g. `80,86,89,90,100,120` (default: those of the
    /// GPUs `nvidia-smi` finds, else that list: Ampere to Blackwell; newer cards JIT the
    /// newest PTX). See [`crate::cuda_arch`].
    #[arg(long, value_name = "LIST")]
    arch: Option<String>,
    /// Also assemble every PTX with `ptxas` for its architecture (what the driver's JIT does on
    /// such a card): a compile-only check that each target is really covered.
    #[arg(long)]
    ptxas_check: bool,
}

/// What the cargo runs of one build share: toolkit, target folder and architectures.
struct BuildEnv {
    toolkit: Toolkit,
    target_dir: PathBuf,
    /// The nvcc wrapper (see [`cuda_arch::nvcc_wrapper`]).
    nvcc: PathBuf,
    archs: Vec<u32>,
    ptxas_check: bool,
}

/// One executable produced by cargo.
#[derive(Debug)]
struct Artifact {
    /// The name it gets in the bin dir.
    name: String,
    /// Where cargo wrote it.
    path: PathBuf,
}

/// Runs the task.
pub fn cuda_build(args: &CudaBuildArgs) -> Result<()> {
    let root = workspace_root()?;
    let target_dir = root.join("target/cuda");
    let bin_dir = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| target_dir.join("dist"));
    let toolkit = cuda_toolkit::find_or_install()?;
    let archs = match &args.arch {
        Some(list) => cuda_arch::parse_archs(list)?,
        None => cuda_arch::detect().unwrap_or_else(|| cuda_arch::DEFAULT_ARCHS.to_vec()),
    };
    eprintln!(
        "xtask: building for compute capabilities {} (candle's kernels: {})",
        cuda_arch::join(&archs),
        archs[0]
    );
    let env = BuildEnv {
        nvcc: cuda_arch::nvcc_wrapper(&target_dir, &toolkit.nvcc)?,
        toolkit,
        target_dir,
        archs,
        ptxas_check: args.ptxas_check,
    };

    let tests = cargo_executables(
        &root,
        &env,
        &[
            "test",
            "--release",
            "-p",
            "gpt-kernels",
            "--features",
            "cuda",
            "--no-run",
        ],
        "building the gpt-kernels CUDA tests",
    )?;
    let gptoss = cargo_executables(
        &root,
        &env,
        &[
            "build",
            "--release",
            "-p",
            "gpt-cli",
            "--features",
            "cuda",
            "--bin",
            "gptoss",
        ],
        "building gptoss with --features cuda",
    )?;
    let gptoss = match gptoss.as_slice() {
        [one] => one,
        other => bail!("expected exactly one gptoss executable from cargo, got {other:?}"),
    };

    std::fs::create_dir_all(&bin_dir)
        .with_context(|| format!("cannot create the bin dir {}", bin_dir.display()))?;
    let mut outputs = Vec::new();
    for artifact in tests.iter().chain(std::iter::once(gptoss)) {
        let dest = bin_dir.join(&artifact.name);
        strip_into(&artifact.path, &dest)?;
        let size = std::fs::metadata(&dest)?.len();
        println!("{:>8.1} MB  {}", size as f64 / 1e6, dest.display());
        outputs.push(dest);
    }
    let gptoss_out = outputs.last().context("no outputs")?;
    let abs = std::fs::canonicalize(gptoss_out)?;
    println!("{}", abs.display());
    Ok(())
}

/// The workspace root: the parent of this crate's folder.
fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent folder")
}

/// Runs cargo with `args` (plus JSON messages) in the CUDA build environment and returns the
/// executables it reports (binaries and test harnesses).
fn cargo_executables(
    root: &Path,
    env: &BuildEnv,
    args: &[&str],
    what: &str,
) -> Result<Vec<Artifact>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let toolkit = &env.toolkit;
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .env("CARGO_TARGET_DIR", &env.target_dir)
        .env("CUDA_HOME", &toolkit.home)
        .env("NVCC", &env.nvcc)
        .env("PATH", cuda_toolkit::path_with(&toolkit.home.join("bin"))?)
        .env("CUDA_COMPUTE_CAP", env.archs[0].to_string())
        .env("GPTOSS_CUDA_ARCHS", cuda_arch::join(&env.archs))
        .env(
            "GPTOSS_PTXAS_CHECK",
            if env.ptxas_check { "1" } else { "0" },
        )
        .env_remove("CUDA_PATH")
        .env_remove("CUDA_ROOT")
        .env_remove("CUDA_TOOLKIT_ROOT_DIR")
        .stdout(Stdio::piped());
    eprintln!("xtask: {what}: cargo {}", args.join(" "));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what}: cannot start cargo"))?;
    let stdout = child.stdout.take().context("cargo stdout not captured")?;
    let mut found = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.with_context(|| format!("{what}: reading cargo output"))?;
        if let Some(artifact) = parse_artifact(&line) {
            found.push(artifact);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{what} failed ({status}); see the compiler messages above");
    }
    Ok(found)
}

/// An executable from one line of cargo's JSON output, if the line reports one.
fn parse_artifact(line: &str) -> Option<Artifact> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    if msg.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let path = PathBuf::from(msg.get("executable")?.as_str()?);
    let target = msg.get("target")?;
    let target_name = target.get("name")?.as_str()?;
    let is_test = msg.get("profile")?.get("test")?.as_bool()?;
    let kinds: Vec<&str> = target
        .get("kind")?
        .as_array()?
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    let name = if !is_test || kinds.contains(&"test") {
        target_name.to_string()
    } else {
        format!("{}-{}-unittests", package_name(&msg)?, kinds.join("-"))
    };
    Some(Artifact { name, path })
}

/// The package name from `package_id` (`path+file:///x/gpt-kernels#0.1.0` or
/// `registry+...#name@1.0`).
fn package_name(msg: &serde_json::Value) -> Option<String> {
    let id = msg.get("package_id")?.as_str()?;
    let tail = id.rsplit('#').next()?;
    let name = match tail.split_once('@') {
        Some((name, _)) => name,
        None => id
            .trim_end_matches(tail)
            .trim_end_matches('#')
            .rsplit('/')
            .next()?,
    };
    Some(name.to_string())
}

/// Writes a stripped copy of `src` to `dest`.
fn strip_into(src: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        std::fs::remove_file(dest).with_context(|| format!("cannot replace {}", dest.display()))?;
    }
    let mut strip = Command::new("strip");
    strip.arg("-o").arg(dest).arg(src);
    cuda_toolkit::run(&mut strip, "strip")
}

#[cfg(test)]
mod tests {
    use super::parse_artifact;

    #[test]
    fn parses_bin_and_test_artifacts() {
        let bin = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/gpt-cli#0.1.0","target":{"kind":["bin"],"name":"gptoss"},"profile":{"test":false},"executable":"/t/release/gptoss"}"#;
        let test = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/gpt-kernels#0.1.0","target":{"kind":["test"],"name":"cuda_smoke"},"profile":{"test":true},"executable":"/t/release/deps/cuda_smoke-abc"}"#;
        let unit = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/gpt-kernels#0.1.0","target":{"kind":["lib"],"name":"gpt_kernels"},"profile":{"test":true},"executable":"/t/release/deps/gpt_kernels-abc"}"#;
        let lib = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/crates/gpt-kernels#0.1.0","target":{"kind":["lib"],"name":"gpt_kernels"},"profile":{"test":false},"executable":null}"#;
        assert_eq!(
            parse_artifact(bin).map(|a| a.name).as_deref(),
            Some("gptoss")
        );
        assert_eq!(
            parse_artifact(test).map(|a| a.name).as_deref(),
            Some("cuda_smoke")
        );
        assert_eq!(
            parse_artifact(unit).map(|a| a.name).as_deref(),
            Some("gpt-kernels-lib-unittests")
        );
        assert!(parse_artifact(lib).is_none());
    }
}
