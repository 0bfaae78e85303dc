//! `transcribe --server URL --captions [SOURCE]`: subscribes to a server-side caption
//! source (StreamCaptions) and prints what it hears. On a terminal the current partial is
//! rewritten in place and finals scroll above it; otherwise one final per line, so it can
//! be piped. Source state changes (interrupted, active again) go to stderr. The call ends
//! with the source (exit 0), on Ctrl-C (exit 0) or with the server's status (exit 2).
//!
//! When the call fails in a way worth retrying (the server went away or drains, the
//! connection broke, the subscriber fell behind), it resubscribes after a backoff (the
//! client library's rules, `--retry-for`) asking for the history it missed; finals already
//! shown (same wall-clock end: `capture_start_time` + offset) are not shown again.

use std::io::{IsTerminal, Write};

use anyhow::Context;
use transcribe_proto::v1::{SourceState, StreamCaptionsRequest, StreamCaptionsResponse};

use crate::cli::Args;

/// ANSI: return to column 0 and clear the line.
const CLEAR_LINE: &str = "\r\x1b[2K";
/// ANSI: dim text (the unconfirmed tail of a partial), and reset.
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// Recent finals asked for on joining, so a viewer sees what was just said (and a
/// subscriber that connects a moment after the source starts misses nothing short).
const JOIN_HISTORY: i32 = 5;

/// Finals asked for on resubscribing (the server keeps up to its history capacity, 100 by
/// default): what was said while the subscription was down.
const RESUBSCRIBE_HISTORY: i32 = 100;

/// Finals whose wall-clock ends are this close are the same final (offsets are whole
/// milliseconds or finer).
const FINAL_TIME_TOLERANCE: f64 = 1e-3;

/// Width assumed for the partial line when the terminal's is unknown.
const DEFAULT_WIDTH: usize = 80;

/// Subscribes to `source` (empty: the server's default source) on `args.server` and prints
/// captions until the source ends; returns the exit status.
///
/// # Errors
/// The connection or the call failed (the server's status is in the message), or stdout
/// could not be written.
pub fn run(args: &Args, source: &str) -> anyhow::Result<u8> {
    let target = crate::remote::target(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let live = std::io::stdout().is_terminal();
    runtime.block_on(async {
        tokio::select! {
            result = subscribe(&target, source, live, args.retry()) => result,
            _ = tokio::signal::ctrl_c() => {
                if live {
                    let mut out = std::io::stdout().lock();
                    write!(out, "{CLEAR_LINE}")?;
                    out.flush()?;
                }
                Ok(crate::EXIT_OK)
            }
        }
    })
}

async fn subscribe(
    target: &transcribe_client::Target,
    source: &str,
    live: bool,
    retry: Option<transcribe_client::RetryPolicy>,
) -> anyhow::Result<u8> {
    use transcribe_client::Verdict;
    use transcribe_client::resume::Backoff;
    let url = target.url.as_str();
    let what = if source.is_empty() {
        "the default caption source".to_owned()
    } else {
        format!("caption source {source:?}")
    };
    let mut display = Display::new(live);
    let mut backoff = Backoff::new(retry.unwrap_or_default(), u64::from(std::process::id()));
    let mut calls = 0u32;
    loop {
        calls += 1;
        let started = std::time::Instant::now();
        let mut answered = None;
        let request = StreamCaptionsRequest {
            source: source.to_owned(),
            interim_results: live,
            enable_word_time_offsets: false,
            enable_voice_activity_events: false,
            history_size: if calls == 1 {
                JOIN_HISTORY
            } else {
                RESUBSCRIBE_HISTORY
            },
        };
        let error = match transcribe_client::connect(target).await {
            Ok(mut client) => match client.stream_captions(request).await {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(message)) => {
                                answered = Some(std::time::Instant::now());
                                display.show(&message)?;
                            }
                            Ok(None) => {
                                display.finish()?;
                                return Ok(crate::EXIT_OK);
                            }
                            Err(status) => break transcribe_client::ClientError::Status(status),
                        }
                    }
                }
                Err(status) => transcribe_client::ClientError::Status(status),
            },
            Err(error) => error,
        };
        // The streams' rules (a server never reached is said at once); the length limit
        // does not apply to subscriptions.
        let hint = match error.verdict(calls > 1) {
            Verdict::Retry { hint } => Some(hint),
            Verdict::Continue | Verdict::Fail => None,
        };
        let message = match &error {
            transcribe_client::ClientError::Status(status) => status.message().to_owned(),
            other => other.to_string(),
        };
        let stopped = || {
            let context = if answered.is_some() || calls > 1 {
                format!("captions of {what} from {url} stopped")
            } else {
                format!("cannot subscribe to {what} at {url}")
            };
            Err(anyhow::anyhow!("{message}")).context(context)
        };
        let (Some(hint), Some(_)) = (hint, retry) else {
            display.finish()?;
            return stopped();
        };
        if answered.is_some() {
            backoff.succeeded();
        }
        let spent = answered.unwrap_or(started).elapsed();
        let Some(wait) = backoff.failed(spent, hint) else {
            display.finish()?;
            return stopped().with_context(|| {
                format!(
                    "gave up after {:.1} s and {calls} calls",
                    backoff.failing_for().as_secs_f64()
                )
            });
        };
        display.finish()?;
        eprintln!("{message}; resubscribing in {:.1} s", wait.as_secs_f64());
        tokio::time::sleep(wait).await;
    }
}

/// What is on the screen.
struct Display {
    live: bool,
    /// A partial line is showing (live only).
    partial: bool,
    /// The state last reported.
    state: Option<i32>,
    width: usize,
    /// Finals already shown, across resubscriptions.
    seen: SeenFinals,
}

/// Which finals were shown: by wall-clock end (`capture_start_time` + `result_end_offset`),
/// so that the history replayed on resubscribing repeats none.
#[derive(Debug, Default)]
struct SeenFinals {
    /// The source's `capture_start_time` (Unix seconds), when known.
    capture_start: Option<f64>,
    /// Wall-clock end (Unix seconds) of the newest final shown.
    last_end: Option<f64>,
}

impl SeenFinals {
    fn source(&mut self, source: &transcribe_proto::v1::CaptionSource) {
        self.capture_start = source
            .capture_start_time
            .as_ref()
            .map(|t| t.seconds as f64 + f64::from(t.nanos) * 1e-9);
    }

    /// Whether a final ending at `end_offset` is new (and remembers it).
    fn admit(&mut self, end_offset: Option<&prost_types::Duration>) -> bool {
        let Some(start) = self.capture_start else {
            return true;
        };
        let end = start
            + end_offset
                .and_then(transcribe_proto::duration::to_std)
                .map_or(0.0, |d| d.as_secs_f64());
        if self
            .last_end
            .is_some_and(|last| end <= last + FINAL_TIME_TOLERANCE)
        {
            return false;
        }
        self.last_end = Some(end);
        true
    }
}

impl Display {
    fn new(live: bool) -> Self {
        let width = terminal_size::terminal_size().map_or(DEFAULT_WIDTH, |(w, _)| w.0 as usize);
        Self {
            live,
            partial: false,
            state: None,
            width: width.max(10),
            seen: SeenFinals::default(),
        }
    }

    fn show(&mut self, message: &StreamCaptionsResponse) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if let Some(source) = &message.source {
            self.source_changed(source, &mut out)?;
            self.seen.source(source);
        }
        let mut finals: Vec<&str> = Vec::new();
        for result in message.results.iter().filter(|r| r.is_final) {
            if !self.seen.admit(result.result_end_offset.as_ref()) {
                continue;
            }
            if let Some(alternative) = result.alternatives.first() {
                finals.push(alternative.transcript.trim());
            }
        }
        for text in finals {
            if self.partial {
                write!(out, "{CLEAR_LINE}")?;
                self.partial = false;
            }
            if !text.is_empty() {
                writeln!(out, "{text}")?;
            }
        }
        let interims: Vec<(&str, f32)> = message
            .results
            .iter()
            .filter(|r| !r.is_final)
            .filter_map(|r| {
                r.alternatives
                    .first()
                    .map(|a| (a.transcript.trim(), r.stability))
            })
            .collect();
        if self.live && !interims.is_empty() {
            let (stable, unstable) = split_interim(&interims);
            let (stable, unstable) = fit(&stable, &unstable, self.width - 1);
            write!(out, "{CLEAR_LINE}{stable}")?;
            if !unstable.is_empty() {
                let sep = if stable.is_empty() { "" } else { " " };
                write!(out, "{sep}{DIM}{unstable}{RESET}")?;
            }
            self.partial = true;
        }
        out.flush()
    }

    fn source_changed(
        &mut self,
        source: &transcribe_proto::v1::CaptionSource,
        out: &mut impl Write,
    ) -> std::io::Result<()> {
        let previous = self.state.replace(source.state);
        if previous == Some(source.state) {
            return Ok(());
        }
        let note = match (previous, source.state()) {
            (None, _) => Some(format!(
                "captions from {} ({}), model {}",
                source.name, source.display_name, source.model
            )),
            (_, SourceState::Interrupted) => Some(format!(
                "source {} interrupted: {}",
                source.name,
                source.status.as_ref().map_or("", |s| s.message.as_str())
            )),
            (Some(p), SourceState::Active) if p == SourceState::Interrupted as i32 => {
                Some(format!("source {} active again", source.name))
            }
            (_, SourceState::Paused) => Some(format!("source {} paused", source.name)),
            _ => None,
        };
        if let Some(note) = note {
            if self.partial {
                write!(out, "{CLEAR_LINE}")?;
                out.flush()?;
                self.partial = false;
            }
            eprintln!("{note}");
        }
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        if self.partial {
            let mut out = std::io::stdout().lock();
            write!(out, "{CLEAR_LINE}")?;
            out.flush()?;
            self.partial = false;
        }
        Ok(())
    }
}

/// The stable (committed) and unstable (tail) text of an interim message's results.
fn split_interim(results: &[(&str, f32)]) -> (String, String) {
    let mut stable = Vec::new();
    let mut unstable = Vec::new();
    for (text, stability) in results {
        if text.is_empty() {
            continue;
        }
        if *stability >= 0.5 {
            stable.push(*text);
        } else {
            unstable.push(*text);
        }
    }
    (stable.join(" "), unstable.join(" "))
}

/// The end of `stable` + `unstable` that fits in `width` characters (a partial line must
/// not wrap, or rewriting it in place would leave its first rows behind).
fn fit(stable: &str, unstable: &str, width: usize) -> (String, String) {
    let sep = usize::from(!stable.is_empty() && !unstable.is_empty());
    let total = stable.chars().count() + sep + unstable.chars().count();
    if total <= width {
        return (stable.to_owned(), unstable.to_owned());
    }
    let mut cut = total - width + 1; // room for the ellipsis
    let stable_len = stable.chars().count();
    let (stable, unstable) = if cut >= stable_len + sep {
        cut -= stable_len + sep;
        (
            String::new(),
            unstable.chars().skip(cut).collect::<String>(),
        )
    } else {
        (
            stable.chars().skip(cut).collect::<String>(),
            unstable.to_owned(),
        )
    };
    if stable.is_empty() {
        (String::new(), format!("…{unstable}"))
    } else {
        (format!("…{stable}"), unstable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_finals_already_shown_are_skipped() {
        let source = |seconds| transcribe_proto::v1::CaptionSource {
            capture_start_time: Some(prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        };
        let at = |s: i64| prost_types::Duration {
            seconds: s,
            nanos: 0,
        };
        let mut seen = SeenFinals::default();
        // Before the source is known nothing can be compared: shown.
        assert!(seen.admit(Some(&at(1))));
        seen.source(&source(1_000));
        assert!(seen.admit(Some(&at(2))));
        assert!(seen.admit(Some(&at(5))));
        // Resubscribed: the history replays 2 s and 5 s, then 8 s is new.
        seen.source(&source(1_000));
        assert!(!seen.admit(Some(&at(2))));
        assert!(!seen.admit(Some(&at(5))));
        assert!(seen.admit(Some(&at(8))));
        // The source restarted later: its offsets start again, on a later clock.
        seen.source(&source(2_000));
        assert!(seen.admit(Some(&at(1))));
    }

    #[test]
    fn interims_split_by_stability() {
        let (s, u) = split_interim(&[("hello there", 0.9), ("general", 0.1)]);
        assert_eq!((s.as_str(), u.as_str()), ("hello there", "general"));
        let (s, u) = split_interim(&[("", 0.9), ("general", 0.1)]);
        assert_eq!((s.as_str(), u.as_str()), ("", "general"));
    }

    #[test]
    fn long_partials_keep_their_end() {
        assert_eq!(fit("ab", "cd", 10), ("ab".into(), "cd".into()));
        let (s, u) = fit("hello there", "general kenobi", 12);
        assert_eq!((s.as_str(), u.as_str()), ("", "…eral kenobi"));
        let (s, u) = fit("hello there", "gen", 10);
        assert_eq!((s.as_str(), u.as_str()), ("…there", "gen"));
        let (s, u) = fit("abcdef", "ghij", 5);
        assert_eq!((s.as_str(), u.as_str()), ("", "…ghij"));
    }
}
