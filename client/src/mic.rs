//! `transcribe --mic`: live transcription of a microphone, in-process (the streaming policy
//! driven by [`crate::live`]) or streamed to a server (`--server URL --mic`), and
//! `transcribe --list-devices`.
//!
//! Output: on a terminal (text format) the current partial is redrawn in place on the last
//! line and finals scroll above it; otherwise one final per line (text), one JSON object per
//! line (`--format json`), or an SRT/VTT document written when capture stops. Ctrl-C ends
//! capture: the open utterance is finalized and printed, and the exit status is 0; a second
//! Ctrl-C exits at once (status 130).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use transcribe_audio::capture::{Capture, CaptureConfig, CaptureEvent, CaptureInfo};
use transcribe_client::{StreamEvent, StreamOptions, stream_audio};
use transcribe_core::audio::samples_to_seconds;
use transcribe_core::policy::PolicyConfig;
use transcribe_core::subtitles::timestamp;
use transcribe_core::{PolicyEvent, Segment, Transcript, Word};
use transcribe_engine::WhisperModel;

use crate::cli::{Args, UsageError};
use crate::format::{Format, Report, render};
use crate::live::{self, LiveError};

/// ANSI: return to column 0 and clear the line.
const CLEAR_LINE: &str = "\r\x1b[2K";
/// ANSI: dim text (the unconfirmed tail of a partial), and reset.
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// Terminal width when it cannot be asked (not a terminal, or no size reported).
const FALLBACK_WIDTH: usize = 80;

/// Audio chunks buffered between the capture thread and the gRPC sender (`--server`): about
/// 0.6 s of 10 ms chunks. Full-policy: the capture thread blocks, its ring counts overruns.
const REMOTE_AUDIO_CAPACITY: usize = 64;

/// How long Ctrl-C waits for the audio captured before it to be handed on.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Exit status after a second Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: i32 = 130;

/// Characters of previous finals used as the prompt: none, as the server's default
/// (`prompt_history` 0: prompts made tiny.en loop on `audio-fixtures/speech/pauses.wav`).
const PROMPT_HISTORY_CHARS: usize = 0;

/// `transcribe --list-devices`: one input device per line, `*` marking the default.
pub fn list_devices() -> anyhow::Result<u8> {
    let devices = transcribe_audio::capture::list_devices()?;
    let mut out = std::io::stdout().lock();
    if devices.is_empty() {
        eprintln!("no audio input devices found");
    }
    for d in &devices {
        let marker = if d.is_default { '*' } else { ' ' };
        if d.name == d.id {
            writeln!(out, "{marker} {}", d.id)?;
        } else {
            writeln!(out, "{marker} {}\t{}", d.id, d.name)?;
        }
    }
    out.flush()?;
    Ok(crate::EXIT_OK)
}

/// `transcribe --mic [--device NAME]`, in-process or with `--server URL`.
pub fn run(args: &Args) -> anyhow::Result<u8> {
    if !args.files.is_empty() {
        return Err(UsageError("--mic takes no FILE arguments".into()).into());
    }
    if args.output_dir.is_some() {
        return Err(UsageError("--mic prints to stdout; --output-dir is for files".into()).into());
    }
    match &args.server {
        Some(url) => run_remote(args, url),
        None => run_local(args),
    }
}

fn run_local(args: &Args) -> anyhow::Result<u8> {
    if let Some(lang) = args.language.as_deref()
        && !transcribe_core::language::is_known(lang)
    {
        return Err(UsageError(format!(
            "unknown language {lang:?}: use an ISO 639-1 code such as en, de or fr"
        ))
        .into());
    }
    let show_progress = !args.no_progress && std::io::stderr().is_terminal();
    let model_path = crate::offline::resolve_model(
        args.model.as_deref(),
        transcribe_engine::default_streaming_model(),
        args.offline,
        show_progress,
    )?;
    let engine = crate::offline::engine_config(&args.engine)?;
    let model = WhisperModel::load(&model_path, &engine)?;
    let multilingual = model.is_multilingual();
    if !multilingual && args.language.as_deref().is_some_and(|l| l != "en") {
        return Err(UsageError(format!(
            "model {} is English-only; use a multilingual model for --language {}",
            model_path.display(),
            args.language.as_deref().unwrap_or_default()
        ))
        .into());
    }
    let session = model.session()?;
    let policy = PolicyConfig {
        // English-only models must be told: whisper.cpp may otherwise detect another
        // language on them (the server pins them the same way).
        language: args
            .language
            .clone()
            .or_else(|| (!multilingual).then(|| "en".to_owned())),
        translate: args.translate,
        prompt_max_chars: PROMPT_HISTORY_CHARS,
        ..PolicyConfig::for_device(engine.use_gpu)
    };

    let (sink, rx) = live::channel();
    let interrupt = sink.clone();
    let capture = Capture::start(&capture_config(args), move |event| match event {
        CaptureEvent::Audio(samples) => sink.audio(samples),
        CaptureEvent::Overrun {
            total_frames_dropped,
        } => {
            tracing::warn!(
                message = "Audio dropped: transcription is not keeping up.",
                total_frames_dropped
            );
            true
        }
        CaptureEvent::Ended(error) => {
            sink.fail(error.to_string());
            false
        }
    })?;
    let stopper = capture.stopper();
    install_interrupt(move || {
        // Everything captured before Ctrl-C goes in first, then the end of the stream.
        stopper.stop_and_wait(STOP_WAIT);
        interrupt.end();
    })?;
    announce(capture.info());

    let label = args
        .model
        .clone()
        .unwrap_or_else(|| transcribe_engine::default_streaming_model().to_string());
    let mut display = Display::new(args, capture.info(), label);
    let result = live::run(session, policy, rx, |event| display.policy_event(event));
    let stats = capture.stop();
    let finished = display.finish();
    if stats.frames_dropped > 0 {
        eprintln!(
            "warning: {} audio frames were dropped because transcription fell behind",
            stats.frames_dropped
        );
    }
    match result {
        Ok(_) => {}
        // The io::Error itself (not wrapped), so a closed pipe is recognised and exits 0.
        Err(LiveError::Sink(e)) => return Err(e.into()),
        Err(e) => return Err(e.into()),
    }
    finished?;
    Ok(crate::EXIT_OK)
}

fn run_remote(args: &Args, url: &str) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let options = StreamOptions {
        model: args.model.clone(),
        language: args.language.clone(),
        translate: args.translate,
        retry: args.retry(),
        ..StreamOptions::default()
    };
    let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let target = crate::remote::target(args)?;

    runtime.block_on(async {
        let (audio_tx, audio_rx) = tokio::sync::mpsc::channel::<Vec<f32>>(REMOTE_AUDIO_CAPACITY);
        let failed = Arc::clone(&failure);
        // The sink owns `audio_tx`: when capture stops (Ctrl-C) or fails, the consumer
        // thread drops it, the stream sees the end of its audio and half-closes the call.
        // While a call is being resumed, the client keeps the audio (see
        // `transcribe_client::stream_audio`), so capture never waits on the server.
        let capture = Capture::start(&capture_config(args), move |event| match event {
            CaptureEvent::Audio(samples) => audio_tx.blocking_send(samples).is_ok(),
            CaptureEvent::Overrun {
                total_frames_dropped,
            } => {
                tracing::warn!(
                    message = "Audio dropped: the server is not keeping up.",
                    total_frames_dropped
                );
                true
            }
            CaptureEvent::Ended(error) => {
                if let Ok(mut slot) = failed.lock() {
                    *slot = Some(error.to_string());
                }
                false
            }
        })?;
        let stopper = capture.stopper();
        install_interrupt(move || stopper.stop())?;
        announce(capture.info());
        let mut display = Display::new(
            args,
            capture.info(),
            args.model
                .clone()
                .unwrap_or_else(|| format!("server default at {url}")),
        );
        let mut shown: std::io::Result<()> = Ok(());
        let streamed = stream_audio(&target, audio_rx, &options, |event| {
            if shown.is_ok() {
                shown = display.stream_event(event);
            }
        })
        .await
        .with_context(|| format!("streaming the microphone to {url}"));
        let stats = capture.stop();
        let finished = display.finish();
        if stats.frames_dropped > 0 {
            eprintln!(
                "warning: {} audio frames were dropped because the server fell behind",
                stats.frames_dropped
            );
        }
        streamed?;
        shown?;
        finished?;
        if let Some(message) = failure.lock().ok().and_then(|mut s| s.take()) {
            anyhow::bail!("{message}");
        }
        Ok(crate::EXIT_OK)
    })
}

fn capture_config(args: &Args) -> CaptureConfig {
    CaptureConfig {
        device: args.device.clone(),
        ..CaptureConfig::default()
    }
}

/// Tells the user (on stderr) what is being captured and how to stop.
fn announce(info: &CaptureInfo) {
    eprintln!(
        "Listening on {} ({}: {} Hz, {} ch, {}). Press Ctrl-C to stop.",
        info.name, info.device, info.sample_rate, info.channels, info.sample_format
    );
}

/// Ctrl-C: the first runs `first` (finalize and stop), a second exits at once.
fn install_interrupt(first: impl Fn() + Send + 'static) -> anyhow::Result<()> {
    let presses = AtomicU32::new(0);
    ctrlc::set_handler(move || {
        if presses.fetch_add(1, Ordering::SeqCst) == 0 {
            first();
        } else {
            std::process::exit(EXIT_INTERRUPTED);
        }
    })
    .context("cannot install the Ctrl-C handler")
}

/// A final as displayed.
#[derive(Clone, Debug, PartialEq)]
struct FinalLine {
    utterance_index: u64,
    start: f64,
    end: f64,
    text: String,
    words: Vec<Word>,
    language: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Partial redrawn in place, finals scroll.
    Terminal,
    /// One final's text per line.
    Lines,
    /// One JSON object per final per line.
    JsonLines,
    /// A document rendered when capture stops (SRT, VTT).
    Document(Format),
}

/// Shows partials and finals on stdout.
struct Display {
    mode: Mode,
    timestamps: bool,
    width: usize,
    partial_visible: bool,
    finals: Vec<FinalLine>,
    source: String,
    model: String,
    started: Instant,
    out: std::io::Stdout,
}

impl Display {
    fn new(args: &Args, info: &CaptureInfo, model: String) -> Self {
        let tty = std::io::stdout().is_terminal();
        let mode = match args.format {
            Format::Txt if tty => Mode::Terminal,
            Format::Txt => Mode::Lines,
            Format::Json => Mode::JsonLines,
            other => Mode::Document(other),
        };
        let width = terminal_size::terminal_size_of(std::io::stdout())
            .map_or(FALLBACK_WIDTH, |(w, _)| usize::from(w.0));
        Self {
            mode,
            timestamps: args.timestamps,
            width,
            partial_visible: false,
            finals: Vec::new(),
            source: format!("microphone {}", info.device),
            model,
            started: Instant::now(),
            out: std::io::stdout(),
        }
    }

    fn policy_event(&mut self, event: &PolicyEvent) -> std::io::Result<()> {
        match event {
            PolicyEvent::Interim {
                committed, tail, ..
            } => self.interim(committed, tail),
            PolicyEvent::Final {
                utterance_index,
                text,
                words,
                start_samples,
                end_samples,
                language,
                ..
            } => self.final_line(FinalLine {
                utterance_index: *utterance_index,
                start: samples_to_seconds(*start_samples as usize),
                end: samples_to_seconds(*end_samples as usize),
                text: text.trim().to_owned(),
                words: words.clone(),
                language: language.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn stream_event(&mut self, event: StreamEvent) -> std::io::Result<()> {
        match event {
            StreamEvent::Interim {
                stable, unstable, ..
            } => self.interim(&stable, &unstable),
            StreamEvent::Final(f) => self.final_line(FinalLine {
                utterance_index: f.utterance_index,
                start: f.start,
                end: f.end,
                text: f.text,
                words: f.words,
                language: f.language,
            }),
            StreamEvent::Resuming { error, after, from } => {
                if self.partial_visible {
                    self.partial_visible = false;
                    let mut out = self.out.lock();
                    write!(out, "{CLEAR_LINE}")?;
                    out.flush()?;
                }
                eprintln!("{}", crate::remote::resuming_line(&error, after, from));
                Ok(())
            }
            StreamEvent::Resumed { gap } => {
                eprintln!("{}", crate::remote::resumed_line(gap));
                Ok(())
            }
            StreamEvent::Progress { .. } => Ok(()),
        }
    }

    fn interim(&mut self, committed: &str, tail: &str) -> std::io::Result<()> {
        if self.mode != Mode::Terminal {
            return Ok(());
        }
        let mut out = self.out.lock();
        if committed.is_empty() && tail.is_empty() {
            self.partial_visible = false;
            write!(out, "{CLEAR_LINE}")?;
        } else {
            let (committed, tail) = fit_partial(committed, tail, self.width.saturating_sub(1));
            self.partial_visible = true;
            write!(out, "{CLEAR_LINE}{committed}{DIM}{tail}{RESET}")?;
        }
        out.flush()
    }

    fn final_line(&mut self, line: FinalLine) -> std::io::Result<()> {
        let prefix = if self.timestamps {
            format!(
                "[{} --> {}] ",
                timestamp(line.start, '.'),
                timestamp(line.end, '.')
            )
        } else {
            String::new()
        };
        let mut out = self.out.lock();
        match self.mode {
            Mode::Terminal => {
                self.partial_visible = false;
                if line.text.is_empty() {
                    write!(out, "{CLEAR_LINE}")?;
                } else {
                    writeln!(out, "{CLEAR_LINE}{prefix}{}", line.text)?;
                }
            }
            Mode::Lines if !line.text.is_empty() => writeln!(out, "{prefix}{}", line.text)?,
            Mode::Lines => {}
            Mode::JsonLines if !line.text.is_empty() => {
                let value = serde_json::json!({
                    "utterance_index": line.utterance_index,
                    "start": line.start,
                    "end": line.end,
                    "text": line.text,
                    "language": line.language,
                    "words": line.words,
                });
                writeln!(out, "{value}")?;
            }
            Mode::JsonLines => {}
            Mode::Document(_) => {
                drop(out);
                self.finals.push(line);
                return Ok(());
            }
        }
        out.flush()
    }

    /// Clears a partial left on the terminal, or writes the document.
    fn finish(&mut self) -> std::io::Result<()> {
        let mut out = self.out.lock();
        match self.mode {
            Mode::Terminal if self.partial_visible => {
                self.partial_visible = false;
                write!(out, "{CLEAR_LINE}")?;
            }
            Mode::Document(format) => {
                let segments: Vec<Segment> = self
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
                    .collect();
                let transcript = Transcript {
                    segments,
                    language: self.finals.iter().find_map(|f| f.language.clone()),
                };
                let duration = self.finals.last().map_or(0.0, |f| f.end);
                let report = Report {
                    file: &self.source,
                    model: &self.model,
                    language: transcript.language.as_deref(),
                    audio_duration: duration,
                    processing_time: self.started.elapsed().as_secs_f64(),
                    text: transcript.text(),
                    segments: &transcript.segments,
                };
                out.write_all(render(format, &transcript, &report).as_bytes())?;
            }
            _ => {}
        }
        out.flush()
    }
}

/// The partial as it fits in `width` columns: `committed`, a space, `tail`, with the oldest
/// characters cut (and an ellipsis put first) when it is too long. Returns the visible
/// committed part (with its trailing space) and the visible tail.
fn fit_partial(committed: &str, tail: &str, width: usize) -> (String, String) {
    let sep = if committed.is_empty() || tail.is_empty() {
        ""
    } else {
        " "
    };
    let committed = format!("{committed}{sep}");
    let total = committed.chars().count() + tail.chars().count();
    if total <= width || width == 0 {
        return (committed, tail.to_owned());
    }
    // Keep the last `width - 1` characters, put an ellipsis in front.
    let mut cut = total - width.saturating_sub(1);
    let c_len = committed.chars().count();
    let visible_committed: String = committed.chars().skip(cut).collect();
    cut = cut.saturating_sub(c_len);
    let visible_tail: String = tail.chars().skip(cut).collect();
    if visible_committed.is_empty() {
        (String::new(), format!("…{visible_tail}"))
    } else {
        (format!("…{visible_committed}"), visible_tail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partials_keep_their_newest_characters() {
        assert_eq!(
            fit_partial("hello", "world", 80),
            ("hello ".to_owned(), "world".to_owned())
        );
        assert_eq!(
            fit_partial("", "world", 80),
            (String::new(), "world".into())
        );
        // 12 characters into 8 columns: an ellipsis and the last 7.
        assert_eq!(
            fit_partial("hello", "world", 8),
            ("…o ".to_owned(), "world".to_owned())
        );
        assert_eq!(
            fit_partial("hello", "wonderful world", 6),
            (String::new(), "…world".to_owned())
        );
        assert_eq!(
            fit_partial("a long committed text", "x", 10),
            ("…ed text ".to_owned(), "x".to_owned())
        );
    }
}
