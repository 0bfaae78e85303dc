//! The accelerators ggml sees (its backend device registry), for `--version` and the
//! server's startup log: "which backend is active and on which device".

#![allow(unsafe_code)]

use std::ffi::CStr;

/// One ggml backend device that is a GPU (or an accelerator such as Metal's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuDevice {
    /// Index among GPU devices (the `--gpu-device` number).
    pub index: usize,
    /// ggml's name for it (`CUDA0`, `Metal`).
    pub name: String,
    /// Its description (`NVIDIA H100 80GB HBM3`, `Apple M2 Pro`).
    pub description: String,
    /// Total memory in bytes, as the backend reports it.
    pub memory_total: u64,
}

impl std::fmt::Display for GpuDevice {
    /// `CUDA0 (NVIDIA H200, 139 GiB)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {} GiB)",
            self.name,
            self.description,
            self.memory_total >> 30
        )
    }
}

fn c_string(p: *const std::os::raw::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: ggml returns NUL-terminated strings owned by the device, alive for the program.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The GPU devices of the backends compiled into this binary (none on CPU builds). The first
/// call initialises the backends (CUDA prints its device list to stderr then).
pub fn gpu_devices() -> Vec<GpuDevice> {
    let mut out = Vec::new();
    // SAFETY: the registry functions take no pointers from us except `free`/`total`, which
    // point at live locals; device handles come from ggml and stay valid.
    unsafe {
        for i in 0..whisper_rs_sys::ggml_backend_dev_count() {
            let dev = whisper_rs_sys::ggml_backend_dev_get(i);
            if dev.is_null()
                || whisper_rs_sys::ggml_backend_dev_type(dev)
                    != whisper_rs_sys::ggml_backend_dev_type_GGML_BACKEND_DEVICE_TYPE_GPU
            {
                continue;
            }
            let (mut free, mut total) = (0usize, 0usize);
            whisper_rs_sys::ggml_backend_dev_memory(dev, &mut free, &mut total);
            out.push(GpuDevice {
                index: out.len(),
                name: c_string(whisper_rs_sys::ggml_backend_dev_name(dev)),
                description: c_string(whisper_rs_sys::ggml_backend_dev_description(dev)),
                memory_total: total as u64,
            });
        }
    }
    out
}

/// "cpu", or the backend and device `gpu_device` names, e.g. `cuda: CUDA0 (NVIDIA H100 80GB
/// HBM3, 79 GiB)`; says so when that device does not exist.
pub fn describe(use_gpu: bool, gpu_device: i32) -> String {
    let backend = crate::backend();
    if !use_gpu || backend == "cpu" {
        return "cpu".to_owned();
    }
    let devices = gpu_devices();
    match usize::try_from(gpu_device)
        .ok()
        .and_then(|i| devices.get(i))
    {
        Some(d) => format!("{backend}: {d}"),
        None => format!(
            "{backend}: no GPU device {gpu_device} ({} found; whisper.cpp falls back to the CPU)",
            devices.len()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_builds_describe_the_cpu() {
        assert_eq!(describe(false, 0), "cpu");
        if crate::backend() == "cpu" {
            assert!(gpu_devices().is_empty());
            assert_eq!(describe(true, 0), "cpu");
        }
    }
}
