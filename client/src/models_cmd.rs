//! `transcribe models list | pull | import | quantize | bench | synth`.

use std::io::IsTerminal;

use anyhow::Context;
use transcribe_models::{FetchOptions, ModelName, ModelSpec, QuantType};

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
                // Quantized catalog models (ggml-base-q8_0.bin) by their name, others by path.
                let quantized = other
                    .path
                    .file_name()
                    .and_then(|f| f.to_str())
                    .and_then(|f| f.strip_prefix("ggml-")?.strip_suffix(".bin"))
                    .filter(|s| matches!(s.parse(), Ok(ModelSpec::Quantized(..))));
                let label =
                    quantized.map_or_else(|| other.path.display().to_string(), str::to_owned);
                println!("{label:<16} {:>7.0} MB  cached", other.bytes as f64 / 1e6);
            }
        }
        ModelsCommand::Pull { name } => {
            let spec: ModelSpec = name.parse().map_err(|e| UsageError(format!("{e}")))?;
            let options = fetch_options(progress);
            let path = match spec {
                ModelSpec::Name(name) => transcribe_models::pull(name, &options)?,
                // Made from the cached (or fetched) f16 file when not cached yet.
                ModelSpec::Quantized(..) => transcribe_models::resolve(&spec, &options)?,
                ModelSpec::Path(p) => {
                    return Err(UsageError(format!(
                        "`models pull` takes a model name, not a path ({})",
                        p.display()
                    ))
                    .into());
                }
            };
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
        ModelsCommand::Quantize { model, quant, out } => {
            let quant: QuantType = quant.parse().map_err(UsageError)?;
            let input = resolve(&model, progress)?;
            let out = out.unwrap_or_else(|| quantized_path(&input, quant));
            let report = transcribe_models::quantize_ggml(
                &input,
                &out,
                quant,
                &mut transcribe_engine::quantize::quantize_rows,
            )
            .with_context(|| format!("quantizing {}", input.display()))?;
            eprintln!(
                "{}: {} matrices quantized, {} tensors copied, {:.1} MB -> {:.1} MB",
                report.quant,
                report.quantized,
                report.copied,
                report.bytes_in as f64 / 1e6,
                report.bytes_out as f64 / 1e6
            );
            println!("{}", out.display());
        }
        ModelsCommand::Bench {
            model,
            audio,
            runs,
            tokens,
            streams,
            engine,
        } => {
            use transcribe_engine::bench::{WINDOW_SAMPLES, median, time_kernels};
            let path = resolve(&model, progress)?;
            let config = crate::offline::engine_config(&engine)?;
            if !streams.is_empty() && !config.flash_attn {
                return Err(UsageError(
                    "--streams needs flash attention (--flash-attn on; the default on GPUs)".into(),
                )
                .into());
            }
            let window = match &audio {
                Some(file) => {
                    transcribe_audio::decode_file(file)
                        .with_context(|| format!("reading {}", file.display()))?
                        .samples
                }
                None => (0..WINDOW_SAMPLES)
                    .map(|i| 0.1 * (i as f32 * 440.0 * std::f32::consts::TAU / 16_000.0).sin())
                    .collect(),
            };
            let start = std::time::Instant::now();
            let loaded = transcribe_engine::WhisperModel::load(&path, &config)?;
            let load_ms = start.elapsed().as_secs_f64() * 1e3;
            let t = time_kernels(&loaded, &window, runs, tokens)?;
            let model_type = loaded.model_type();
            drop(loaded);
            let multi = if streams.is_empty() {
                Vec::new()
            } else {
                let model = transcribe_engine::multi::MultiModel::load(&path, &config)?;
                transcribe_engine::multi::time_streams(&model, &window, &streams, tokens)?
                    .into_iter()
                    .map(|s| {
                        serde_json::json!({
                            "streams": s.streams,
                            "one_at_a_time_ms_per_step": s.one_at_a_time_ms,
                            "threads_ms_per_step": s.threads_ms,
                            "multi_ms_per_step": s.multi_ms,
                        })
                    })
                    .collect()
            };
            let report = serde_json::json!({
                "model": path.display().to_string(),
                "model_type": model_type,
                "backend": transcribe_engine::backend(),
                "use_gpu": config.use_gpu,
                "gpu_device": config.gpu_device,
                "flash_attn": config.flash_attn,
                "threads": config.threads,
                "load_ms": load_ms,
                "mel_ms_median": median(&t.mel_ms),
                "encode_ms_median": median(&t.encode_ms),
                "encode_ms": t.encode_ms,
                "decode_ms_per_token_median": median(&t.decode_token_ms),
                "decode_tokens": t.decode_token_ms.len(),
                "streams": multi,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        ModelsCommand::Synth {
            name,
            vocab_from,
            out,
            seed,
        } => {
            let shapes: ModelName = name.parse().map_err(|e| UsageError(format!("{e}")))?;
            let hp = shapes.hparams();
            let vocab_path = resolve(&vocab_from, progress)?;
            let vocab = transcribe_models::inspect_ggml(&vocab_path)?.vocab;
            let bytes = transcribe_models::synth_ggml(&hp, &vocab, &out, seed)
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "{}: {} shapes, RANDOM weights (seed {seed}), vocabulary of {}, {:.1} MB",
                out.display(),
                shapes.as_str(),
                vocab_path.display(),
                bytes as f64 / 1e6
            );
            println!("{}", out.display());
        }
    }
    Ok(crate::EXIT_OK)
}

/// A model name or path as a local ggml file, fetching a named model when needed.
fn resolve(model: &str, progress: bool) -> anyhow::Result<std::path::PathBuf> {
    let spec: ModelSpec = model.parse().map_err(|e| UsageError(format!("{e}")))?;
    Ok(transcribe_models::resolve(&spec, &fetch_options(progress))?)
}

/// Fetch options that can also make quantized catalog models (`base-q8_0`).
fn fetch_options(progress: bool) -> FetchOptions {
    FetchOptions {
        progress,
        quantizer: Some(transcribe_engine::quantize::quantize_rows),
        ..Default::default()
    }
}

/// `dir/ggml-tiny.en.bin` -> `dir/ggml-tiny.en-q5_0.bin`.
fn quantized_path(input: &std::path::Path, quant: QuantType) -> std::path::PathBuf {
    let stem = input
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    input.with_file_name(format!("{stem}-{quant}.bin"))
}
