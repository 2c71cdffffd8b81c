//! Which GPUs a CUDA build targets (`cargo xtask cuda-build --arch 80,86,89,90,100,120`).
//!
//! - Our kernels (`gpt-kernels/build.rs`, env `GPTOSS_CUDA_ARCHS`) get one PTX per listed
//!   compute capability; at load time the highest one the device runs is used, so a card newer
//!   than the list JIT-compiles the newest PTX.
//! - Candle's kernels are built once, for the lowest listed capability (env `CUDA_COMPUTE_CAP`):
//!   their PTX kernels JIT on every newer card. Its statically linked kernels (`libmoe.a`,
//!   behind `QMatMul` on CUDA) get native code for that capability only (cudaforge's
//!   `-gencode=arch=compute_XX,code=sm_XX`), which does not run on a newer major version; the
//!   nvcc wrapper written here adds `code=compute_XX` to those object builds, which embeds the
//!   PTX beside it so that the driver can JIT it there too.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The default when no GPU is found: Ampere (A100: 80; RTX 30xx: 86), Ada (RTX 40xx: 89),
/// Hopper (90), Blackwell (B200: 100; RTX 50xx: 120).
pub const DEFAULT_ARCHS: &[u32] = &[80, 86, 89, 90, 100, 120];

/// Parses `80,86,90` (also `sm_90`, `8.6`) into ascending, deduplicated capabilities × 10.
pub fn parse_archs(list: &str) -> Result<Vec<u32>> {
    let mut archs = Vec::new();
    for part in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let digits = part
            .trim_start_matches("sm_")
            .trim_start_matches("compute_");
        let arch = match digits.split_once('.') {
            Some((major, minor)) => major
                .parse::<u32>()
                .ok()
                .zip(minor.parse::<u32>().ok())
                .map(|(a, b)| a * 10 + b),
            None => digits.parse::<u32>().ok(),
        };
        let Some(arch) = arch else {
            bail!("--arch: {part:?} is not a compute capability (e.g. 80, 86, 90, 120)");
        };
        if arch < 80 {
            bail!("--arch: {arch} is not supported; the kernels need Ampere (80) or newer");
        }
        archs.push(arch);
    }
    archs.sort_unstable();
    archs.dedup();
    if archs.is_empty() {
        bail!("--arch: no compute capability in {list:?}");
    }
    Ok(archs)
}

/// The compute capabilities of the GPUs `nvidia-smi` lists, if it runs.
pub fn detect() -> Option<Vec<u32>> {
    let out = Command::new("nvidia-smi")
        .args(["--query-gpu=compute_cap", "--format=csv,noheader"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let list = text.lines().collect::<Vec<_>>().join(",");
    parse_archs(&list).ok()
}

/// Writes (if changed) the nvcc wrapper that embeds PTX into single-architecture object
/// builds, and returns its path.
pub fn nvcc_wrapper(dir: &Path, real_nvcc: &Path) -> Result<PathBuf> {
    let path = dir.join("nvcc-embed-ptx");
    let script = format!(
        r#"#!/bin/sh
# Written by `cargo xtask cuda-build` (xtask/src/cuda_arch.rs). For an object build (-c) with
# one -gencode=arch=compute_XX,code=sm_XX, also embeds compute_XX PTX, so that newer GPUs can
# JIT it. Everything else goes to nvcc unchanged.
extra=""
obj=0
for a in "$@"; do
  case "$a" in
    -c) obj=1 ;;
    -gencode=arch=compute_*,code=sm_*) v="${{a#-gencode=arch=}}"; extra="-gencode=arch=${{v%%,*}},code=${{v%%,*}}" ;;
  esac
done
if [ "$obj" = 1 ] && [ -n "$extra" ]; then
  exec '{nvcc}' "$@" "$extra"
fi
exec '{nvcc}' "$@"
"#,
        nvcc = real_nvcc.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if std::fs::read_to_string(&path).ok().as_deref() != Some(script.as_str()) {
        std::fs::write(&path, &script)
            .with_context(|| format!("cannot write {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(path)
}

/// `80,86,90` for the env.
pub fn join(archs: &[u32]) -> String {
    archs
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_in_every_spelling() {
        assert_eq!(
            parse_archs("90, 80,sm_86,8.9,120,90").unwrap(),
            vec![80, 86, 89, 90, 120]
        );
        assert_eq!(parse_archs("compute_100").unwrap(), vec![100]);
        assert!(parse_archs("75").is_err());
        assert!(parse_archs("ampere").is_err());
        assert!(parse_archs(" , ").is_err());
    }

    #[test]
    fn wrapper_adds_ptx_to_object_builds_only() {
        let dir = std::env::temp_dir().join(format!("xtask-wrap-{}", std::process::id()));
        // A fake nvcc that prints its arguments.
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("fake-nvcc");
        std::fs::write(&fake, "#!/bin/sh\necho \"$@\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let wrap = nvcc_wrapper(&dir, &fake).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(&wrap).args(args).output().unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        assert_eq!(
            run(&["-gencode=arch=compute_80,code=sm_80", "-c", "-o", "a.o", "a.cu"]),
            "-gencode=arch=compute_80,code=sm_80 -c -o a.o a.cu -gencode=arch=compute_80,code=compute_80"
        );
        assert_eq!(
            run(&["-gencode=arch=compute_80,code=sm_80", "--ptx", "a.cu"]),
            "-gencode=arch=compute_80,code=sm_80 --ptx a.cu"
        );
        assert_eq!(run(&["--version"]), "--version");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
