//! Generates the transcribe.v1 messages, client and server with prost/tonic, using the
//! protoc binary vendored by `protoc-bin-vendored` (no system protoc needed), and writes a
//! file descriptor set for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // `prost::Name` on every message: the JSON mapping finds its descriptor by full name.
    config.enable_type_names();

    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("transcribe_v1_descriptor.bin"))
        .compile_with_config(
            config,
            &[PathBuf::from("transcribe/v1/transcribe.proto")],
            &[PathBuf::from("."), well_known],
        )?;
    Ok(())
}
