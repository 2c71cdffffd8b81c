//! Finding a CUDA 13.0 toolkit, or installing a pinned one from PyPI wheels.
//!
//! The wheels merge into `<cache>/root/nvidia/cu13/{bin,include,lib,nvvm}`, which becomes
//! `CUDA_HOME`. Two gaps are filled by hand: unversioned `lib*.so` symlinks (the wheels ship
//! only `lib*.so.13`), and a link-time stub `lib/stubs/libcuda.so` (the driver library is in
//! no wheel; at run time the real driver answers to the soname `libcuda.so.1`).

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The wheels that make up the toolkit, pinned to CUDA 13.0 (the H100 machine's driver is
/// CUDA 13.0; PTX from a newer nvcc would not JIT there).
const PINNED_WHEELS: &[&str] = &[
    "nvidia-cuda-nvcc==13.0.88",
    "nvidia-cuda-runtime==13.0.96",
    "nvidia-cuda-crt==13.0.88",
    "nvidia-nvvm==13.0.88",
    "nvidia-cuda-nvrtc==13.0.88",
    "nvidia-cuda-cccl==13.0.85",
    "nvidia-cublas==13.0.2.14",
    "nvidia-curand==10.4.0.35",
];

/// The `nvcc --version` substring that marks a suitable toolkit.
const REQUIRED_RELEASE: &str = "release 13.0";

/// Written last by a successful install; its content is the pin list.
const MARKER: &str = ".gptoss-cuda-complete";

/// Extracts the `nvidia/` part of each wheel given on the command line into `argv[1]`,
/// keeping the Unix permissions stored in the zip (nvcc, ptxas and cicc must stay executable).
const EXTRACT_PY: &str = r#"
import os, sys, zipfile
dest = sys.argv[1]
for wheel in sys.argv[2:]:
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if not info.filename.startswith("nvidia/") or info.is_dir():
                continue
            path = z.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(path, mode)
"#;

/// A usable CUDA toolkit.
#[derive(Debug, Clone)]
pub struct Toolkit {
    /// The folder to use as `CUDA_HOME` (holds `bin/nvcc`, `include`, `lib` or `lib64`).
    pub home: PathBuf,
    /// The `nvcc` executable.
    pub nvcc: PathBuf,
}

/// Returns a CUDA 13.0 toolkit: the first suitable `nvcc` named by env `NVCC`, `CUDA_HOME` or
/// `PATH`; otherwise the one installed (once) into the cache folder.
pub fn find_or_install() -> Result<Toolkit> {
    for nvcc in nvcc_candidates() {
        if is_suitable(&nvcc) {
            let home = nvcc
                .parent()
                .and_then(Path::parent)
                .with_context(|| format!("nvcc at {} has no grandparent folder", nvcc.display()))?
                .to_path_buf();
            eprintln!("xtask: using CUDA toolkit at {}", home.display());
            return Ok(Toolkit { home, nvcc });
        }
    }
    let cache = cache_dir()?;
    install(&cache)
}

/// The cache folder: env `GPTOSS_CUDA_CACHE`, else `~/.cache/gptoss/cuda-13.0`.
fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("GPTOSS_CUDA_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("neither GPTOSS_CUDA_CACHE nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/gptoss/cuda-13.0"))
}

fn nvcc_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(nvcc) = std::env::var_os("NVCC") {
        out.push(PathBuf::from(nvcc));
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        out.push(PathBuf::from(home).join("bin/nvcc"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        out.extend(std::env::split_paths(&path).map(|dir| dir.join("nvcc")));
    }
    out.into_iter().filter(|p| p.is_file()).collect()
}

fn is_suitable(nvcc: &Path) -> bool {
    match Command::new(nvcc).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains(REQUIRED_RELEASE) {
                true
            } else {
                eprintln!(
                    "xtask: ignoring {} (not CUDA 13.0: {})",
                    nvcc.display(),
                    text.lines().last().unwrap_or("").trim()
                );
                false
            }
        }
        _ => false,
    }
}

/// Installs the pinned toolkit into `cache` unless a previous install completed.
fn install(cache: &Path) -> Result<Toolkit> {
    let root = cache.join("root");
    let home = root.join("nvidia/cu13");
    let toolkit = Toolkit {
        nvcc: home.join("bin/nvcc"),
        home: home.clone(),
    };
    let marker = root.join(MARKER);
    let pins = PINNED_WHEELS.join("\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == pins) {
        eprintln!(
            "xtask: CUDA 13.0 toolkit already installed at {}",
            home.display()
        );
        return Ok(toolkit);
    }

    eprintln!(
        "xtask: installing the CUDA 13.0 toolkit into {}",
        root.display()
    );
    let wheels = cache.join("wheels");
    std::fs::create_dir_all(&wheels)
        .with_context(|| format!("cannot create {}", wheels.display()))?;
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
    ])
    .arg(&wheels)
    .args(PINNED_WHEELS);
    run(&mut pip, "pip download of the CUDA wheels")?;

    if root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("cannot remove the partial install {}", root.display()))?;
    }
    std::fs::create_dir_all(&root)?;
    let wheel_files = wheels_for_pins(&wheels)?;
    let mut extract = Command::new("python3");
    extract
        .arg("-c")
        .arg(EXTRACT_PY)
        .arg(&root)
        .args(&wheel_files);
    run(&mut extract, "extracting the CUDA wheels")?;
    ensure!(
        toolkit.nvcc.is_file(),
        "the wheels did not provide {}",
        toolkit.nvcc.display()
    );

    let lib = home.join("lib");
    add_unversioned_symlinks(&lib)?;
    build_libcuda_stub(&home)?;
    ensure!(
        is_suitable(&toolkit.nvcc),
        "the installed nvcc ({}) does not report {REQUIRED_RELEASE}",
        toolkit.nvcc.display()
    );
    std::fs::write(&marker, pins)?;
    eprintln!("xtask: CUDA toolkit ready at {}", home.display());
    Ok(toolkit)
}

/// The downloaded wheel file of each pin (`nvidia-cuda-nvcc==13.0.88` ->
/// `nvidia_cuda_nvcc-13.0.88-*.whl`), so stale wheels of other versions are ignored.
fn wheels_for_pins(dir: &Path) -> Result<Vec<PathBuf>> {
    let names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    PINNED_WHEELS
        .iter()
        .map(|pin| {
            let (name, version) = pin.split_once("==").context("pin without ==")?;
            let prefix = format!("{}-{version}-", name.replace('-', "_"));
            names
                .iter()
                .find(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
                .map(|n| dir.join(n))
                .with_context(|| format!("no wheel for {pin} in {}", dir.display()))
        })
        .collect()
}

/// For each `libX.so.N[.M..]` in `lib` without a `libX.so`, adds `libX.so -> libX.so.N..`.
fn add_unversioned_symlinks(lib: &Path) -> Result<()> {
    let mut bases = BTreeSet::new();
    for entry in std::fs::read_dir(lib).with_context(|| format!("cannot list {}", lib.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some((base, _version)) = name.split_once(".so.") {
            bases.insert((format!("{base}.so"), name));
        }
    }
    for (unversioned, versioned) in bases {
        let link = lib.join(&unversioned);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(&versioned, &link)
                .with_context(|| format!("cannot symlink {}", link.display()))?;
        }
    }
    Ok(())
}

/// Builds `lib/stubs/libcuda.so`: one empty function per `cu*` driver API name in `cuda.h`.
fn build_libcuda_stub(home: &Path) -> Result<()> {
    let include = home.join("include");
    let mut cpp = Command::new("gcc");
    cpp.arg("-E")
        .arg("-I")
        .arg(&include)
        .arg(include.join("cuda.h"));
    let out = cpp.output().context("cannot run gcc -E on cuda.h")?;
    ensure!(
        out.status.success(),
        "gcc -E cuda.h failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = driver_function_names(&String::from_utf8_lossy(&out.stdout));
    ensure!(
        names.len() > 100,
        "found only {} cu* names in cuda.h",
        names.len()
    );
    let stubs = home.join("lib/stubs");
    std::fs::create_dir_all(&stubs)?;
    let src: String = names
        .iter()
        .map(|n| format!("void {n}(void){{}}\n"))
        .collect();
    let c_file = stubs.join("libcuda_stub.c");
    std::fs::write(&c_file, src)?;
    let mut cc = Command::new("gcc");
    cc.args(["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(stubs.join("libcuda.so"))
        .arg(&c_file);
    run(&mut cc, "building the libcuda link stub")
}

/// Every identifier `cu[A-Z]\w*` directly followed (after optional spaces) by `(`.
fn driver_function_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        if !is_word(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && is_word(bytes[i]) {
            i += 1;
        }
        let word = &text[start..i];
        let mut j = i;
        while j < bytes.len() && (bytes[j] == b' ' || bytes[j] == b'\t') {
            j += 1;
        }
        let wb = word.as_bytes();
        if wb.len() > 2
            && wb.starts_with(b"cu")
            && wb[2].is_ascii_uppercase()
            && j < bytes.len()
            && bytes[j] == b'('
        {
            names.insert(word.to_string());
        }
    }
    names
}

/// Runs `cmd` with its stdout sent to our stderr (stdout is reserved for the task's
/// results), failing with `what` and the command line if it does not exit with 0.
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("{what}: cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{what} failed ({status}): {cmd:?}");
    }
    Ok(())
}

/// `dir` prepended to the current `PATH`.
pub fn path_with(dir: &Path) -> Result<OsString> {
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).context("cannot build PATH")
}

#[cfg(test)]
mod tests {
    use super::driver_function_names;

    #[test]
    fn collects_driver_names_only() {
        let text =
            "CUresult cuInit (unsigned int);\nint cudaFoo(void); CUresult cuMemAlloc_v2(x);\n\
                    typedef int cuNotAFunction; CUresult cuLaunchKernel\t(f);";
        let names: Vec<_> = driver_function_names(text).into_iter().collect();
        assert_eq!(names, ["cuInit", "cuLaunchKernel", "cuMemAlloc_v2"]);
    }
}
