//! `transcribe --server URL FILE...`: files decoded here, streamed to a server, results
//! shown as they arrive (the partial line rewritten in place on a terminal) and rendered in
//! the chosen format.
//!
//! [`target`] turns `--server`, `--ca-file` and `--auth-token-file` (or
//! `TRANSCRIBE_AUTH_TOKEN`) into the connection every remote mode uses (`--server FILE`,
//! `--server --mic`, `--server --captions`).

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use transcribe_client::{StreamEvent, StreamOptions, Target, stream_samples};
use transcribe_core::{Segment, Transcript};

use crate::cli::Args;
use crate::format::{Format, Report, render};

/// ANSI: return to column 0 and clear the line.
const CLEAR_LINE: &str = "\r\x1b[2K";
/// ANSI: dim text (the unconfirmed tail of a partial), and reset.
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// Environment variable holding a bearer token itself (when no `--auth-token-file` is
/// given). An environment variable rather than a flag, so the token never shows in the
/// process list.
pub const AUTH_TOKEN_ENV: &str = "TRANSCRIBE_AUTH_TOKEN";

/// The server to reach: `--server`'s URL, `--ca-file`, and the bearer token from
/// `--auth-token-file` or else `TRANSCRIBE_AUTH_TOKEN`.
///
/// # Errors
/// The CA or token file cannot be read or holds nothing usable (the message names it), or
/// the environment's token is unusable.
pub fn target(args: &Args) -> anyhow::Result<Target> {
    let mut target = Target::new(args.server.clone().unwrap_or_default());
    if let Some(ca) = &args.ca_file {
        target = target.with_ca_file(ca)?;
    }
    if let Some(file) = &args.auth_token_file {
        target = target.with_token_file(file)?;
    } else if let Some(token) = std::env::var_os(AUTH_TOKEN_ENV) {
        let token = token.to_str().unwrap_or("\u{fffd}");
        target = target
            .with_token(token)
            .with_context(|| format!("in {AUTH_TOKEN_ENV}"))?;
    }
    Ok(target)
}

/// Streams every file to `args.server`; returns the exit status (2 if any failed).
pub fn run(args: &Args) -> anyhow::Result<u8> {
    let target = target(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    }
    let mut failed = 0;
    for file in &args.files {
        match runtime.block_on(stream_one(&target, file, args)) {
            Ok(()) => {}
            Err(e) if crate::is_broken_pipe(&e) => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("error: {e:#}");
            }
        }
    }
    Ok(if failed == 0 {
        crate::EXIT_OK
    } else {
        crate::EXIT_ERROR
    })
}

/// What the CLI says on stderr when a stream resumes.
pub fn resuming_line(error: &str, after: std::time::Duration, from: f64) -> String {
    format!(
        "{error}; resuming from {from:.1} s in {:.1} s",
        after.as_secs_f64()
    )
}

/// What the CLI says on stderr when results flow again after a resume.
pub fn resumed_line(gap: std::time::Duration) -> String {
    format!("resumed after {:.2} s", gap.as_secs_f64())
}

async fn stream_one(target: &Target, file: &Path, args: &Args) -> anyhow::Result<()> {
    let url = target.url.as_str();
    let started = Instant::now();
    let audio = transcribe_audio::decode_file(file)?;
    let options = StreamOptions {
        realtime: args.realtime,
        model: args.model.clone(),
        language: args.language.clone(),
        translate: args.translate,
        retry: args.retry(),
        ..StreamOptions::default()
    };
    // Live display: only for text on a terminal, and only when printing to stdout.
    let live =
        args.format == Format::Txt && args.output_dir.is_none() && std::io::stdout().is_terminal();
    let plain_lines = args.format == Format::Txt && args.output_dir.is_none() && !live;
    let mut io_error: Option<std::io::Error> = None;
    let summary = {
        let mut out = std::io::stdout().lock();
        let mut show = |event: StreamEvent| {
            if io_error.is_some() {
                return;
            }
            let result = match &event {
                StreamEvent::Interim {
                    stable, unstable, ..
                } if live => write!(out, "{CLEAR_LINE}{stable} {DIM}{unstable}{RESET}")
                    .and_then(|()| out.flush()),
                StreamEvent::Final(f) if live => {
                    writeln!(out, "{CLEAR_LINE}{}", f.text).and_then(|()| out.flush())
                }
                StreamEvent::Final(f) if plain_lines && !f.text.is_empty() => {
                    writeln!(out, "{}", f.text).and_then(|()| out.flush())
                }
                StreamEvent::Resuming { error, after, from } => {
                    if live {
                        let _ = write!(out, "{CLEAR_LINE}");
                    }
                    eprintln!("{}", resuming_line(error, *after, *from));
                    Ok(())
                }
                StreamEvent::Resumed { gap } => {
                    eprintln!("{}", resumed_line(*gap));
                    Ok(())
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                io_error = Some(e);
            }
        };
        stream_samples(target, &audio.samples, &options, &mut show)
            .await
            .with_context(|| format!("streaming {} to {url}", file.display()))?
    };
    if let Some(e) = io_error {
        return Err(e.into());
    }
    if live || plain_lines {
        return Ok(());
    }
    let transcript = Transcript {
        segments: summary
            .finals
            .iter()
            .filter(|f| !f.text.is_empty())
            .map(|f| Segment {
                start: f.start,
                end: f.end,
                text: f.text.clone(),
                words: f.words.clone(),
                no_speech_prob: 0.0,
                avg_logprob: 0.0,
            })
            .collect(),
        language: summary.finals.iter().find_map(|f| f.language.clone()),
    };
    let file_label = file.display().to_string();
    let model_label = args
        .model
        .clone()
        .unwrap_or_else(|| format!("server default at {url}"));
    let report = Report {
        file: &file_label,
        model: &model_label,
        language: transcript.language.as_deref(),
        audio_duration: transcribe_core::audio::samples_to_seconds(audio.samples.len()),
        processing_time: started.elapsed().as_secs_f64(),
        text: transcript.text(),
        segments: &transcript.segments,
    };
    let text = render(args.format, &transcript, &report);
    match &args.output_dir {
        Some(dir) => {
            let stem = file
                .file_stem()
                .map_or_else(|| "output".into(), |s| s.to_string_lossy().into_owned());
            let out = dir.join(format!("{stem}.{}", args.format.extension()));
            std::fs::write(&out, text)
                .with_context(|| format!("cannot write {}", out.display()))?;
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(())
}
