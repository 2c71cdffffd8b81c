//! Build script: with the `cuda` feature, compiles every `kernels/*.cu` to PTX once per target
//! architecture and writes `OUT_DIR/ptx.rs` with one `pub const NAME: Kernel` per kernel file
//! (file stem, upper-cased): its file name and `(arch, PTX text)` pairs, lowest arch first. At load time
//! `cuda::ptx::load` picks the highest arch the device can run. Without the feature it does
//! nothing.
//!
//! Env:
//! - `GPTOSS_CUDA_ARCHS`: comma-separated compute capabilities, e.g. `80,86,89,90,100,120`
//!   (`cargo xtask cuda-build --arch` sets it); if unset, `CUDA_COMPUTE_CAP` alone (what candle
//!   reads), else `80`.
//! - `GPTOSS_PTXAS_CHECK=1`: also assemble each PTX with `ptxas -arch=sm_XX`, which proves the
//!   driver's JIT can compile it for that architecture (what a compile-only CI can check).
//! - `NVCC` or `CUDA_HOME`: the compiler (else `nvcc` on `PATH`).
//!
//! The PTX is plain `compute_XX` (no `a` suffix): cudaforge would target `sm_90a` for 90 and up,
//! whose PTX loads on that exact architecture only, so nvcc is called directly here.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "cuda")]
    if let Err(e) = cuda::build() {
        // A build script reports failure by exiting non-zero; print the whole error first.
        eprintln!("gpt-kernels build.rs: {e}");
        std::process::exit(1);
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::fmt::Write as _;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    /// One nvcc (or ptxas) run to do.
    struct Job {
        arch: u32,
        src: PathBuf,
        ptx: PathBuf,
    }

    pub fn build() -> Result<(), String> {
        let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
        let out_dir = PathBuf::from(env("OUT_DIR")?);
        let kernels = manifest.join("kernels");
        println!("cargo:rerun-if-changed={}", kernels.display());
        for var in [
            "NVCC",
            "CUDA_HOME",
            "GPTOSS_CUDA_ARCHS",
            "CUDA_COMPUTE_CAP",
            "GPTOSS_PTXAS_CHECK",
        ] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let archs = archs()?;
        let nvcc = nvcc();
        let check = std::env::var("GPTOSS_PTXAS_CHECK").is_ok_and(|v| v == "1");

        let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels)
            .map_err(|e| format!("cannot list {}: {e}", kernels.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cu"))
            .collect();
        sources.sort();
        let mut jobs = Vec::new();
        for &arch in &archs {
            let dir = out_dir.join(format!("compute_{arch}"));
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for src in &sources {
                let stem = stem(src)?;
                jobs.push(Job {
                    arch,
                    src: src.clone(),
                    ptx: dir.join(format!("{stem}.ptx")),
                });
            }
        }
        run_all(&jobs, |job| {
            let mut cmd = Command::new(&nvcc);
            cmd.arg(format!("-arch=compute_{}", job.arch))
                .args(["--ptx", "-std=c++17", "-O3", "--expt-relaxed-constexpr"])
                .arg("-I")
                .arg(&kernels)
                .arg("-o")
                .arg(&job.ptx)
                .arg(&job.src);
            cmd
        })?;
        if check {
            let ptxas = match std::env::var("CUDA_HOME") {
                Ok(home) => Path::new(&home).join("bin/ptxas"),
                Err(_) => nvcc.with_file_name("ptxas"),
            };
            run_all(&jobs, |job| {
                let mut cmd = Command::new(&ptxas);
                cmd.arg(format!("-arch=sm_{}", job.arch))
                    .arg("-o")
                    .arg("/dev/null")
                    .arg(&job.ptx);
                cmd
            })?;
        }

        let mut rs = String::new();
        for src in &sources {
            let stem = stem(src)?;
            let name = stem.to_uppercase().replace(['.', '-'], "_");
            let _ = writeln!(
                rs,
                "pub const {name}: Kernel = Kernel {{ file: \"{stem}.cu\", targets: &["
            );
            for arch in &archs {
                let _ = writeln!(
                    rs,
                    "    ({arch}, include_str!(concat!(env!(\"OUT_DIR\"), \"/compute_{arch}/{stem}.ptx\"))),"
                );
            }
            let _ = writeln!(rs, "] }};");
        }
        let path = out_dir.join("ptx.rs");
        std::fs::write(&path, rs).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    fn env(var: &str) -> Result<String, String> {
        std::env::var(var).map_err(|e| format!("{var}: {e}"))
    }

    fn stem(p: &Path) -> Result<&str, String> {
        p.file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("kernel file name {} is not UTF-8", p.display()))
    }

    /// The target architectures, ascending and deduplicated.
    fn archs() -> Result<Vec<u32>, String> {
        let list = std::env::var("GPTOSS_CUDA_ARCHS")
            .or_else(|_| std::env::var("CUDA_COMPUTE_CAP"))
            .unwrap_or_else(|_| "80".to_string());
        let mut archs = Vec::new();
        for part in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let digits = part.trim_start_matches("sm_").trim_end_matches(['a', 'f']);
            let arch: u32 = digits
                .parse()
                .map_err(|_| format!("bad compute capability {part:?} in {list:?}"))?;
            if arch < 80 {
                return Err(format!(
                    "compute capability {arch} is not supported: the kernels need 80 (Ampere) or newer"
                ));
            }
            archs.push(arch);
        }
        archs.sort_unstable();
        archs.dedup();
        if archs.is_empty() {
            return Err(format!("no compute capability in {list:?}"));
        }
        Ok(archs)
    }

    fn nvcc() -> PathBuf {
        if let Ok(p) = std::env::var("NVCC") {
            return PathBuf::from(p);
        }
        if let Ok(home) = std::env::var("CUDA_HOME") {
            return Path::new(&home).join("bin/nvcc");
        }
        PathBuf::from("nvcc")
    }

    /// Runs one command per job, as many at a time as the build may use, and reports every
    /// failure with its compiler output.
    fn run_all(jobs: &[Job], make: impl Fn(&Job) -> Command) -> Result<(), String> {
        let width = std::env::var("NUM_JOBS")
            .ok()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(2)
            .max(1);
        let mut errors = Vec::new();
        for chunk in jobs.chunks(width) {
            let children: Vec<_> = chunk
                .iter()
                .map(|job| {
                    let mut cmd = make(job);
                    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
                    let shown = format!("{cmd:?}");
                    (shown, cmd.spawn())
                })
                .collect();
            for (shown, child) in children {
                match child.and_then(|c| c.wait_with_output()) {
                    Ok(o) if o.status.success() => {}
                    Ok(o) => errors.push(format!(
                        "{shown} failed ({}):\n{}{}",
                        o.status,
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )),
                    Err(e) => errors.push(format!("cannot run {shown}: {e}")),
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }
}
