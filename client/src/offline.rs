//! In-process transcription of files.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use transcribe_core::chunk::{MAX_CHUNK_SAMPLES, plan_chunks};
use transcribe_core::vad::VadConfig;
use transcribe_core::{DecodeOptions, EngineError, Transcriber, Transcript};
use transcribe_engine::chunked::transcribe_chunks;
use transcribe_engine::{EngineConfig, WhisperModel, WhisperSession};

use transcribe_flags::EngineArgs;

use crate::cli::{Args, Chunking, UsageError};
use crate::format::{Report, render};

/// Files shorter than this get no progress bar (they finish in about a second).
const PROGRESS_MIN_SECONDS: f64 = 30.0;

/// Resolves `--model` (or `default`) to a file, fetching it when needed.
pub fn resolve_model(
    spec: Option<&str>,
    default: &str,
    offline: bool,
    progress: bool,
) -> anyhow::Result<PathBuf> {
    let spec = spec.unwrap_or(default);
    let spec = transcribe_models::ModelSpec::parse(spec).map_err(|e| UsageError(format!("{e}")))?;
    let options = transcribe_models::FetchOptions {
        offline,
        progress,
        quantizer: Some(transcribe_engine::quantize::quantize_rows),
        ..Default::default()
    };
    Ok(transcribe_models::resolve(&spec, &options)?)
}

/// Transcribes every file in `args.files`; returns the exit status (2 if any failed).
pub fn run(args: &Args) -> anyhow::Result<u8> {
    if let Some(lang) = args.language.as_deref()
        && !transcribe_core::language::is_known(lang)
    {
        return Err(UsageError(format!(
            "unknown language {lang:?}: use an ISO 639-1 code such as en, de or fr"
        ))
        .into());
    }
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    }
    let show_progress = !args.no_progress && std::io::stderr().is_terminal();
    let model_path = resolve_model(
        args.model.as_deref(),
        transcribe_engine::default_model(),
        args.offline,
        show_progress,
    )?;
    let mut config = engine_config(&args.engine)?;
    let parallel = match args.parallel {
        Some(0) => return Err(UsageError("--parallel must be at least 1".into()).into()),
        Some(n) => n,
        None if config.use_gpu && transcribe_engine::has_gpu_backend() => match args.chunking {
            Chunking::Window | Chunking::Fit => GPU_DEFAULT_PARALLEL,
            Chunking::Off => 1,
        },
        None => config.threads.min(MAX_DEFAULT_PARALLEL),
    };
    if args.batch {
        if args.chunking == Chunking::Off {
            return Err(UsageError(
                "--batch needs --chunking fit or window (a whole-file decode is one state)".into(),
            )
            .into());
        }
        if !config.flash_attn {
            return Err(
                UsageError("--batch needs flash attention (--flash-attn on)".into()).into(),
            );
        }
        config.batch_slots = parallel;
    }
    let model = WhisperModel::load(&model_path, &config)?;
    let mut sessions = (0..parallel)
        .map(|_| model.session())
        .collect::<Result<Vec<_>, _>>()?;
    let decoder = Decoder {
        chunking: args.chunking,
        threads: config.threads,
    };
    let model_label = args
        .model
        .clone()
        .unwrap_or_else(|| transcribe_engine::default_model().to_string());
    let options = DecodeOptions {
        language: args.language.clone(),
        translate: args.translate,
        max_tokens: args.decode.max_tokens,
        temperature_fallback: !args.decode.no_fallback,
        no_timestamps: args.decode.no_timestamps,
        ..DecodeOptions::default()
    };
    let mut failed = 0usize;
    let mut stdout = std::io::stdout().lock();
    for file in &args.files {
        match transcribe_one(
            &mut sessions,
            &decoder,
            file,
            &options,
            args,
            &model_label,
            show_progress,
        ) {
            Ok(text) => match &args.output_dir {
                Some(dir) => {
                    let out = output_path(dir, file, args.format.extension());
                    std::fs::write(&out, text)
                        .with_context(|| format!("cannot write {}", out.display()))?;
                }
                None => {
                    stdout.write_all(text.as_bytes())?;
                    stdout.flush()?;
                }
            },
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    if args.batch {
        let (steps, tokens) = transcribe_engine::batch_stats();
        let (busy_us, request_us) = transcribe_engine::batch_time_us();
        eprintln!(
            "batched decoding: {tokens} tokens in {steps} steps (mean batch {:.2}); \
             steps ran {:.2} s, {:.2} ms each; a token waited {:.2} ms for its step's end",
            tokens as f64 / steps.max(1) as f64,
            busy_us as f64 / 1e6,
            busy_us as f64 / 1e3 / steps.max(1) as f64,
            request_us as f64 / 1e3 / tokens.max(1) as f64,
        );
    }
    Ok(if failed == 0 {
        crate::EXIT_OK
    } else {
        crate::EXIT_ERROR
    })
}

/// The engine settings of `--threads`, `--cpu`, `--gpu-device` and `--flash-attn`.
pub(crate) fn engine_config(args: &EngineArgs) -> anyhow::Result<EngineConfig> {
    let mut config = EngineConfig::default();
    if let Some(t) = args.threads {
        if t == 0 {
            return Err(UsageError("--threads must be at least 1".into()).into());
        }
        config.threads = t;
    }
    config.use_gpu = args.use_gpu(config.use_gpu);
    config.flash_attn = args.flash_attn(config.use_gpu);
    config.gpu_device = i32::from(args.gpu_device);
    Ok(config)
}

/// `--parallel` on a GPU with `--chunking window|fit`: 8 sessions took a 10-minute file from 49x
/// to 78x real time with large-v3 shapes and from 76x to 294x with large-v3-turbo's on an
/// H200 (16 were no faster; BENCHMARKS.md "GPU capacity"). Without chunking a file is one
/// decode, so one session.
const GPU_DEFAULT_PARALLEL: usize = 8;

/// Default cap of `--parallel`: each decoding state holds its own buffers (large-v3's are
/// hundreds of MB), and 4 already keep a small CPU's cores busy.
const MAX_DEFAULT_PARALLEL: usize = 4;

/// How files are decoded.
struct Decoder {
    /// Whole file, or chunks cut at pauses (`--chunking`).
    chunking: Chunking,
    /// Threads per decode of the model (shared out among parallel sessions).
    threads: usize,
}

impl Decoder {
    /// Decodes `samples` with `sessions` (chunked and parallel, or whole with the first).
    fn run(
        &self,
        sessions: &mut [WhisperSession],
        samples: &[f32],
        options: &DecodeOptions,
        progress: Option<&(dyn Fn(i32) + Sync)>,
    ) -> Result<Transcript, EngineError> {
        let chunks = if self.chunking != Chunking::Off {
            plan_chunks(samples, &VadConfig::default(), MAX_CHUNK_SAMPLES)
        } else {
            Vec::new()
        };
        // No chunking, or no speech found by the VAD (then Whisper gets the whole file and
        // its own no-speech detection decides: the VAD must not silently drop quiet speech).
        let Some(first) = sessions.first_mut() else {
            return Err(EngineError::Inference("no decoding session".into()));
        };
        if chunks.is_empty() {
            first.set_threads(None);
            return first.transcribe(samples, options);
        }
        // Threads are shared out by --parallel, not by how many chunks this file has: a
        // one-chunk file then decodes with threads / parallel threads, never with a pool of
        // ggml workers that spin at every operation (on a busy 2-core machine, 2 threads per
        // decode took minutes for an 8 s clip that 1 thread decodes in 5 s).
        let per_session = (self.threads / sessions.len()).max(1);
        let p = sessions.len().min(chunks.len()).max(1);
        for s in sessions.iter_mut() {
            s.set_threads(Some(per_session));
        }
        let report = |done: usize, all: usize| {
            if let Some(f) = progress {
                f((done * 100 / all.max(1)) as i32);
            }
        };
        let fit = self.chunking == Chunking::Fit;
        transcribe_chunks(
            &mut sessions[..p],
            samples,
            &chunks,
            options,
            fit,
            Some(&report),
        )
    }
}

fn transcribe_one(
    sessions: &mut [WhisperSession],
    decoder: &Decoder,
    file: &Path,
    options: &DecodeOptions,
    args: &Args,
    model_label: &str,
    show_progress: bool,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let audio = transcribe_audio::decode_file(file)?;
    let duration = transcribe_core::audio::samples_to_seconds(audio.samples.len());
    let bar = (show_progress && duration >= PROGRESS_MIN_SECONDS).then(|| {
        let bar = indicatif::ProgressBar::new(100);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}% ({elapsed})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(file.display().to_string());
        bar
    });
    let progress = bar.clone().map(|b| -> transcribe_engine::ProgressFn {
        Arc::new(move |p| b.set_position(p.clamp(0, 100) as u64))
    });
    // Whole-file decodes report whisper.cpp's percentage; chunked ones report chunks done.
    if decoder.chunking == Chunking::Off
        && let Some(s) = sessions.first_mut()
    {
        s.set_progress(progress.clone());
    }
    let chunk_progress = |p: i32| {
        if let Some(f) = &progress {
            f(p);
        }
    };
    let result = decoder.run(sessions, &audio.samples, options, Some(&chunk_progress));
    if let Some(s) = sessions.first_mut() {
        s.set_progress(None);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let transcript = result.with_context(|| format!("transcribing {}", file.display()))?;
    let file_label = file.display().to_string();
    let report = Report {
        file: &file_label,
        model: model_label,
        language: transcript.language.as_deref(),
        audio_duration: duration,
        processing_time: started.elapsed().as_secs_f64(),
        text: transcript.text(),
        segments: &transcript.segments,
    };
    Ok(render(args.format, &transcript, &report))
}

fn output_path(dir: &Path, input: &Path, ext: &str) -> PathBuf {
    let stem = input
        .file_stem()
        .map_or_else(|| "output".into(), |s| s.to_string_lossy().into_owned());
    dir.join(format!("{stem}.{ext}"))
}
