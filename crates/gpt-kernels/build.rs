//! Build script: with the `cuda` feature, compiles `kernels/*.cu` to PTX (cudaforge) and writes
//! `OUT_DIR/ptx.rs` with one `pub const NAME: &str` per kernel file (file stem, upper-cased).
//! Without the feature it does nothing.
//!
//! Env: `CUDA_COMPUTE_CAP` (e.g. `90`; values >= 90 become `sm_90a`), `NVCC`, `CUDA_HOME`
//! (read by cudaforge). `cargo xtask cuda-build` sets them.

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
    use std::path::PathBuf;

    pub fn build() -> Result<(), String> {
        let manifest =
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
        let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
        let kernels = manifest.join("kernels");
        println!("cargo:rerun-if-changed={}", kernels.display());
        println!("cargo:rerun-if-env-changed=NVCC");
        println!("cargo:rerun-if-env-changed=CUDA_HOME");

        let headers: Vec<PathBuf> = std::fs::read_dir(&kernels)
            .map_err(|e| format!("cannot list {}: {e}", kernels.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cuh"))
            .collect();
        let ptx = cudaforge::KernelBuilder::new()
            .source_dir(&kernels)
            .watch(&headers)
            .include_path(&kernels)
            .out_dir(&out_dir)
            .arg("-std=c++17")
            .arg("-O3")
            .arg("--expt-relaxed-constexpr")
            .build_ptx()
            .map_err(|e| format!("compiling kernels/*.cu to PTX: {e}"))?;
        ptx.write(out_dir.join("ptx.rs"))
            .map_err(|e| format!("writing ptx.rs: {e}"))
    }
}
