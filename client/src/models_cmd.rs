//! `transcribe models list | pull | import`.

use std::io::IsTerminal;

use anyhow::Context;
use transcribe_models::{FetchOptions, ModelName};

use crate::cli::{ModelsCommand, UsageError};

/// Runs a models subcommand; returns the exit status.
pub fn run(command: ModelsCommand) -> anyhow::Result<u8> {
    let progress = std::io::stderr().is_terminal();
    match command {
        ModelsCommand::List => {
            let cache = transcribe_models::cache_dir()?;
            let cached = transcribe_models::list_cached().unwrap_or_default();
            println!("cache: {}", cache.display());
            println!("default: {}", transcribe_engine::default_model());
            for name in ModelName::ALL {
                let state = if cached.iter().any(|c| c.name == Some(name)) {
                    "cached"
                } else {
                    ""
                };
                let mb = name.approx_size() as f64 / 1e6;
                println!("{:<16} {:>7.0} MB  {}", name.as_str(), mb, state);
            }
            for other in cached.iter().filter(|c| c.name.is_none()) {
                println!(
                    "{:<16} {:>7.0} MB  cached",
                    other.path.display(),
                    other.bytes as f64 / 1e6
                );
            }
        }
        ModelsCommand::Pull { name } => {
            let name: ModelName = name.parse().map_err(|e| UsageError(format!("{e}")))?;
            let path = transcribe_models::pull(
                name,
                &FetchOptions {
                    progress,
                    ..Default::default()
                },
            )?;
            println!("{}", path.display());
        }
        ModelsCommand::Import { ct2_dir, out } => {
            let out = match out {
                Some(o) => o,
                None => {
                    let stem = ct2_dir
                        .file_name()
                        .map_or_else(|| "imported".into(), |s| s.to_string_lossy().into_owned());
                    transcribe_models::cache_dir()?.join(format!("ggml-{stem}.bin"))
                }
            };
            let report = transcribe_models::import_ct2(&ct2_dir, &out)
                .with_context(|| format!("importing {}", ct2_dir.display()))?;
            eprintln!(
                "imported {} tensors, {} tokens ({}), {} bytes",
                report.tensors,
                report.vocab_size,
                if report.multilingual {
                    "multilingual"
                } else {
                    "English-only"
                },
                report.bytes
            );
            println!("{}", out.display());
        }
    }
    Ok(crate::EXIT_OK)
}
