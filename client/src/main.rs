//! `transcribe`: speech to text from files (in-process Whisper by default) and model
//! management. Parses arguments and wires the library crates together; the work happens in
//! `transcribe-audio`, `transcribe-models` and `transcribe-engine`.
//!
//! # Layout
//! - `cli`: the clap definitions (the `--help` text).
//! - `format`: txt / srt / vtt / json rendering.
//! - `offline`: in-process transcription of files.
//! - `remote`: files streamed to a transcribe server (`--server URL`).
//! - `captions`: `--server URL --captions [SOURCE]`, a subscriber of a server-side caption
//!   source.
//! - `live`: the live streaming-policy driver (audio in, decodes on an inference thread,
//!   events out), reusable by any live source.
//! - `mic`: `--mic` (microphone, in-process or to a server) and `--list-devices`.
//! - `models_cmd`: `transcribe models list | pull | import`.

mod captions;
mod cli;
mod format;
#[cfg(feature = "capture")]
mod live;
#[cfg(feature = "capture")]
mod mic;
/// Without the `capture` feature nothing links the system's audio library; `--mic` and
/// `--list-devices` say why they cannot run.
#[cfg(not(feature = "capture"))]
mod mic {
    const NO_CAPTURE: &str = "this build of transcribe has no microphone capture (built \
        without the `capture` feature, so that it needs no audio libraries); rebuild with it \
        for --mic and --list-devices";

    pub fn list_devices() -> anyhow::Result<u8> {
        Err(anyhow::anyhow!(NO_CAPTURE))
    }

    pub fn run(_args: &crate::cli::Args) -> anyhow::Result<u8> {
        Err(anyhow::anyhow!(NO_CAPTURE))
    }
}
mod models_cmd;
mod offline;
mod remote;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Exit status for success.
const EXIT_OK: u8 = 0;
/// Exit status for a runtime error (a file failed, a model could not be loaded).
const EXIT_ERROR: u8 = 2;
/// Exit status for bad usage (sysexits.h `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let args = match cli::Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_tracing(args.verbose);
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::from(EXIT_OK),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(if e.downcast_ref::<cli::UsageError>().is_some() {
                EXIT_USAGE
            } else {
                EXIT_ERROR
            })
        }
    }
}

fn run(args: cli::Args) -> anyhow::Result<u8> {
    match args.command {
        Some(cli::Command::Models { command }) => models_cmd::run(command),
        None if args.list_devices => mic::list_devices(),
        None if args.mic => mic::run(&args),
        None if args.captions.is_some() => {
            let source = args.captions.clone().unwrap_or_default();
            captions::run(&args, &source)
        }
        None => {
            if args.files.is_empty() {
                return Err(cli::UsageError(
                    "no input: give one or more FILEs, or --mic (see --help)".into(),
                )
                .into());
            }
            if args.server.is_some() {
                remote::run(&args)
            } else {
                offline::run(&args)
            }
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRANSCRIBE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
