//! Link settings for CUDA builds (the `cuda` feature); does nothing otherwise.
//!
//! whisper-rs-sys searches only `/usr/local/cuda` and `/opt/cuda` for the CUDA libraries, so
//! when `CUDA_PATH` is set this adds `$CUDA_PATH/lib64` and its `stubs` folder (where
//! `scripts/build-cuda` puts a link-time `libcuda.so`) to the link search path, and bakes the
//! colon-separated folders of `TRANSCRIBE_CUDA_RUNPATH` into the binaries' RUNPATH, so they
//! find cudart, cuBLAS and the driver on the GPU machine without `LD_LIBRARY_PATH`
//! (docs/GPU.md). The client and server crates both use this one build script.

use std::env;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    println!("cargo:rerun-if-env-changed=TRANSCRIBE_CUDA_RUNPATH");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    if let Some(cuda) = env::var_os("CUDA_PATH") {
        let lib64 = Path::new(&cuda).join("lib64");
        println!("cargo:rustc-link-search=native={}", lib64.display());
        println!(
            "cargo:rustc-link-search=native={}",
            lib64.join("stubs").display()
        );
    }
    let runpath = env::var("TRANSCRIBE_CUDA_RUNPATH").unwrap_or_default();
    if !runpath.is_empty() {
        println!("cargo:rustc-link-arg=-Wl,--enable-new-dtags");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{runpath}");
    }
}
