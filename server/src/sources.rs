//! Server-side capture sources (`--source`): each runs ONE recognition pipeline (the
//! `StreamingPolicy` from `transcribe-core` on the shared engine pool, like a
//! StreamingRecognize session) whose results go to its [`CaptionHub`] for every
//! StreamCaptions subscriber.
//!
//! ```text
//! feed (file paced in real time | microphone) ──► policy.push_audio ──► events ──► hub
//!                                                 policy.poll_job ──► pool ──► on_result
//! ```
//!
//! A microphone is captured by `transcribe_audio::capture` (cpal callback -> lock-free ring
//! -> consumer thread -> 16 kHz chunks) on a thread that owns the capture; chunks reach the
//! pipeline through a bounded channel ([`MIC_EVENT_CAPACITY`]).
//!
//! A source holds one stream slot of the pool (`--max-streams`) while it runs. When its
//! pipeline fails (admission refused, a decode failed, the device went away) the source is
//! INTERRUPTED (with an in-band status), waits [`RESTART_DELAY`] and restarts with a fresh
//! policy and a new `capture_start_time` (offsets restart at zero). A finite file ENDS: its
//! subscribers get the ENDED state and their calls end with OK. At shutdown the open
//! utterance is flushed, then subscribers end with UNAVAILABLE.
//!
//! # Spec syntax
//! `[NAME=]file:PATH[:loop]` or `[NAME=]mic[:DEVICE]`. Default names: `mic` for a
//! microphone, the file's stem for a file.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use transcribe_audio::capture::{Capture, CaptureConfig, CaptureEvent, CaptureInfo};
use transcribe_core::audio::seconds_to_samples;
use transcribe_core::policy::{FailureKind, JobKind, PolicyConfig, PolicyEvent};
use transcribe_core::{SAMPLE_RATE, StreamingPolicy};
use transcribe_proto::v1::{
    AudioEncoding, AudioFormat, Progress, RecognitionConfig, SourceKind, SourceState, SourceStatus,
    SpeechEventType, SpeechRecognitionAlternative, StreamCaptionsResponse,
    StreamingRecognitionResult,
};

use crate::captions::CaptionHub;
use crate::convert::{
    WordOptions, duration_of, duration_of_samples, mean_confidence, timestamp_now, word_infos,
};
use crate::error::RequestError;
use crate::pool::{Job, JobOutput, StreamLease};
use crate::service::{AppState, parse_recognition};

/// Audio fed to the policy per tick: 100 ms (the API's recommended chunk size).
pub const CHUNK: Duration = Duration::from_millis(100);

/// Silence inserted between the repeats of a looping file, so the VAD closes the last
/// utterance before the file starts again (longer than the policy's default end silence).
pub const LOOP_GAP: Duration = Duration::from_secs(1);

/// Capture events (16 kHz chunks of about 10-100 ms) waiting for a microphone source's
/// pipeline. Full-policy: the capture's consumer thread blocks, the capture ring (2 s) then
/// drops and counts frames (an overrun is logged).
pub const MIC_EVENT_CAPACITY: usize = 64;

/// Wait before an INTERRUPTED source restarts its pipeline.
pub const RESTART_DELAY: Duration = Duration::from_secs(2);

/// Arrival marks kept for processing-latency reports (about 7 minutes of 100 ms chunks).
/// Full-policy: the oldest is dropped.
const MAX_ARRIVAL_MARKS: usize = 4_096;

/// Where a source's audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceInput {
    /// An audio file decoded once and paced in real time.
    File {
        /// The file.
        path: PathBuf,
        /// Start over (after [`LOOP_GAP`]) at its end instead of ending.
        looped: bool,
    },
    /// A capture device.
    Mic {
        /// The device name; `None` for the default input device.
        device: Option<String>,
    },
}

/// One `--source` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// The name subscribers ask for.
    pub name: String,
    /// Its audio.
    pub input: SourceInput,
}

impl SourceSpec {
    /// Parses `[NAME=]file:PATH[:loop]` or `[NAME=]mic[:DEVICE]`.
    ///
    /// # Errors
    /// A message saying which forms are accepted.
    pub fn parse(text: &str) -> Result<Self, String> {
        let form = "use file:PATH[:loop] or mic[:DEVICE], optionally prefixed by NAME=";
        let (name, body) = match text.split_once('=') {
            Some((name, body)) if body.starts_with("file:") || body.starts_with("mic") => {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                {
                    return Err(format!(
                        "source name {name:?} must be letters, digits, '-', '_' or '.'"
                    ));
                }
                (Some(name.to_owned()), body)
            }
            _ => (None, text),
        };
        let input = if let Some(rest) = body.strip_prefix("file:") {
            let (path, looped) = match rest.strip_suffix(":loop") {
                Some(path) => (path, true),
                None => (rest, false),
            };
            if path.is_empty() {
                return Err(format!("{text:?}: the file path is empty; {form}"));
            }
            SourceInput::File {
                path: PathBuf::from(path),
                looped,
            }
        } else if body == "mic" {
            SourceInput::Mic { device: None }
        } else if let Some(device) = body.strip_prefix("mic:") {
            if device.is_empty() {
                return Err(format!("{text:?}: the device name is empty; {form}"));
            }
            SourceInput::Mic {
                device: Some(device.to_owned()),
            }
        } else {
            return Err(format!("{text:?} is not a source; {form}"));
        };
        let name = name.unwrap_or_else(|| match &input {
            SourceInput::Mic { .. } => "mic".to_owned(),
            SourceInput::File { path, .. } => path
                .file_stem()
                .map_or_else(|| "file".to_owned(), |s| s.to_string_lossy().into_owned()),
        });
        Ok(Self { name, input })
    }

    /// The kind for `CaptionSource.kind`.
    pub fn kind(&self) -> SourceKind {
        match self.input {
            SourceInput::File { .. } => SourceKind::File,
            SourceInput::Mic { .. } => SourceKind::Microphone,
        }
    }

    /// A human-readable description (`CaptionSource.display_name`).
    pub fn display_name(&self) -> String {
        match &self.input {
            SourceInput::File { path, looped } => format!(
                "file {}{}",
                path.display(),
                if *looped { " (looping)" } else { "" }
            ),
            SourceInput::Mic { device: None } => "default microphone".to_owned(),
            SourceInput::Mic { device: Some(d) } => format!("microphone {d}"),
        }
    }
}

/// Starts the pipeline of every configured source (called once the models are loaded).
pub(crate) fn start(state: &Arc<AppState>) {
    for (spec, hub) in state.config.sources.iter().zip(state.captions.hubs()) {
        let span = tracing::info_span!("source", name = %spec.name);
        let task = run_source(state.clone(), spec.clone(), hub.clone());
        tokio::spawn(tracing::Instrument::instrument(task, span));
    }
}

/// How one pipeline run ended.
enum Outcome {
    /// A finite source is finished.
    Ended,
    /// The server drains.
    Drained,
    /// Something failed; restart after a delay.
    Failed(RequestError),
}

/// Audio of a source, 16 kHz mono.
enum Feed {
    /// A decoded file, fed one [`CHUNK`] per tick.
    File {
        samples: Arc<Vec<f32>>,
        position: usize,
        looped: bool,
        /// Silence left to feed before the next repeat.
        gap: usize,
    },
    /// A running capture: its events, and the capture thread's stop line (dropping the
    /// feed stops the capture).
    Mic {
        events: mpsc::Receiver<CaptureEvent>,
        _stop: std::sync::mpsc::Sender<()>,
    },
}

/// What the feed gave.
enum FeedItem {
    Audio(Vec<f32>),
    End,
    Failed(RequestError),
}

impl Feed {
    /// The next audio: a file's next chunk on the pacing tick, or the microphone's next
    /// chunk as it arrives. Cancel-safe (both waits are).
    async fn next(&mut self, ticker: &mut tokio::time::Interval, name: &str) -> FeedItem {
        match self {
            Self::File { .. } => {
                ticker.tick().await;
                let len = seconds_to_samples(CHUNK.as_secs_f64());
                self.next_chunk(len).map_or(FeedItem::End, FeedItem::Audio)
            }
            Self::Mic { events, .. } => loop {
                match events.recv().await {
                    Some(CaptureEvent::Audio(samples)) => return FeedItem::Audio(samples),
                    Some(CaptureEvent::Overrun {
                        total_frames_dropped,
                    }) => {
                        tracing::warn!(
                            message = "Capture ring overran; audio was lost.",
                            total_frames_dropped
                        );
                    }
                    Some(CaptureEvent::Ended(error)) => {
                        return FeedItem::Failed(RequestError::SourceUnavailable {
                            name: name.to_owned(),
                            reason: error.to_string(),
                        });
                    }
                    None => {
                        return FeedItem::Failed(RequestError::SourceUnavailable {
                            name: name.to_owned(),
                            reason: "the capture thread stopped".into(),
                        });
                    }
                }
            },
        }
    }

    /// Whether a failure should reopen the device (a file keeps its place).
    fn reopens(&self) -> bool {
        matches!(self, Self::Mic { .. })
    }

    /// A file's next chunk of `len` samples, `None` at the end of a finite file.
    fn next_chunk(&mut self, len: usize) -> Option<Vec<f32>> {
        match self {
            Self::Mic { .. } => None,
            Self::File {
                samples,
                position,
                looped,
                gap,
            } => {
                if *gap > 0 {
                    let n = len.min(*gap);
                    *gap -= n;
                    return Some(vec![0.0; n]);
                }
                if *position >= samples.len() {
                    if !*looped || samples.is_empty() {
                        return None;
                    }
                    *position = 0;
                    let n = len.min(seconds_to_samples(LOOP_GAP.as_secs_f64()));
                    *gap = seconds_to_samples(LOOP_GAP.as_secs_f64()) - n;
                    return Some(vec![0.0; n]);
                }
                let end = (*position + len).min(samples.len());
                let chunk = samples[*position..end].to_vec();
                *position = end;
                Some(chunk)
            }
        }
    }
}

/// The container encodings a file's format maps to in `AudioFormat`.
fn file_encoding(container: &str) -> AudioEncoding {
    match container {
        "wav" => AudioEncoding::Wav,
        "flac" => AudioEncoding::Flac,
        "mp3" => AudioEncoding::Mp3,
        _ => AudioEncoding::Unspecified,
    }
}

fn source_status(error: &RequestError) -> SourceStatus {
    let status = error.to_status();
    SourceStatus {
        code: status.code() as i32,
        message: status.message().to_owned(),
    }
}

/// Runs one source until it ends or the server drains, restarting after failures.
async fn run_source(state: Arc<AppState>, spec: SourceSpec, hub: Arc<CaptionHub>) {
    let mut feed: Option<Feed> = None;
    loop {
        let outcome = match feed.as_mut() {
            Some(feed) => match state.ready() {
                Ok(ready) => match state.admit(ready) {
                    Ok(lease) => pipeline(&state, &spec, &hub, feed, lease).await,
                    Err(RequestError::Draining) => Outcome::Drained,
                    Err(error) => Outcome::Failed(error),
                },
                Err(_) => Outcome::Drained,
            },
            None => match open(&state, &spec, &hub).await {
                Ok(opened) => {
                    feed = Some(opened);
                    continue;
                }
                Err(error) if matches!(spec.input, SourceInput::File { .. }) => {
                    // A file that cannot be decoded will not get better: report and wait.
                    tracing::error!(message = "Source cannot start.", %error);
                    hub.set_state(SourceState::Interrupted, Some(source_status(&error)));
                    state.drain.cancelled().await;
                    Outcome::Drained
                }
                Err(error) => Outcome::Failed(error),
            },
        };
        match outcome {
            Outcome::Ended => {
                tracing::info!(message = "Source ended.");
                hub.set_state(SourceState::Ended, None);
                hub.close(Ok(()));
                return;
            }
            Outcome::Drained => {
                hub.close(Err(RequestError::Draining.to_status()));
                return;
            }
            Outcome::Failed(error) => {
                tracing::warn!(message = "Source interrupted; restarting.", %error,
                    delay_seconds = RESTART_DELAY.as_secs_f64());
                hub.set_state(SourceState::Interrupted, Some(source_status(&error)));
                if feed.as_ref().is_some_and(Feed::reopens) {
                    feed = None;
                }
                tokio::select! {
                    () = tokio::time::sleep(RESTART_DELAY) => {}
                    () = state.drain.cancelled() => {
                        hub.close(Err(RequestError::Draining.to_status()));
                        return;
                    }
                }
            }
        }
    }
}

/// Starts capturing from `device` on a thread of its own that owns the capture (cpal
/// streams stay on the thread that made them) and forwards its events.
async fn open_mic(name: &str, device: Option<String>) -> Result<(Feed, CaptureInfo), RequestError> {
    let (events_tx, events) = mpsc::channel(MIC_EVENT_CAPACITY);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
    let unavailable = |reason: String| RequestError::SourceUnavailable {
        name: name.to_owned(),
        reason,
    };
    std::thread::Builder::new()
        .name("source-capture".into())
        .spawn(move || {
            let config = CaptureConfig {
                device,
                ..CaptureConfig::default()
            };
            // Runs on the capture's consumer thread (not a runtime thread): blocking here
            // is the documented full-policy (the ring then drops and counts frames).
            let sink = move |event| events_tx.blocking_send(event).is_ok();
            match Capture::start(&config, sink) {
                Ok(capture) => {
                    let _ = ready_tx.send(Ok(capture.info().clone()));
                    // Until the feed is dropped.
                    let _ = stop_rx.recv();
                    let stats = capture.stop();
                    tracing::info!(
                        message = "Capture stopped.",
                        frames = stats.frames_captured,
                        dropped = stats.frames_dropped,
                        xruns = stats.xruns
                    );
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                }
            }
        })
        .map_err(|e| unavailable(format!("cannot start the capture thread: {e}")))?;
    let info = ready_rx
        .await
        .map_err(|_| unavailable("the capture thread ended".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
    Ok((
        Feed::Mic {
            events,
            _stop: stop,
        },
        info,
    ))
}

/// The `AudioFormat` of a capture (its native format, before conversion).
fn capture_format(info: &CaptureInfo) -> AudioFormat {
    let encoding = match info.sample_format.as_str() {
        "i16" => AudioEncoding::Linear16,
        "f32" => AudioEncoding::Float32,
        _ => AudioEncoding::Unspecified,
    };
    AudioFormat {
        encoding: encoding as i32,
        sample_rate_hertz: i32::try_from(info.sample_rate).unwrap_or(i32::MAX),
        audio_channel_count: i32::from(info.channels),
    }
}

/// Opens a source's audio and describes it on its hub.
async fn open(state: &AppState, spec: &SourceSpec, hub: &CaptionHub) -> Result<Feed, RequestError> {
    let ready = state.ready()?;
    let recognition = parse_recognition(&RecognitionConfig::default(), "source", &ready.models)?;
    match &spec.input {
        SourceInput::File { path, looped } => {
            let file = path.clone();
            let decoded = tokio::task::spawn_blocking(move || transcribe_audio::decode_file(&file))
                .await
                .map_err(|e| RequestError::internal(format!("decoding task failed: {e}")))?
                .map_err(|e| RequestError::SourceUnavailable {
                    name: spec.name.clone(),
                    reason: format!("cannot decode {}: {e}", path.display()),
                })?;
            let info = &decoded.info;
            let capture_format = AudioFormat {
                encoding: file_encoding(info.container) as i32,
                sample_rate_hertz: i32::try_from(info.sample_rate).unwrap_or(i32::MAX),
                audio_channel_count: i32::from(info.channels),
            };
            hub.update_source(|s| {
                s.capture_format = Some(capture_format);
                s.model = recognition.model_name.clone();
                s.language_codes = recognition.language.iter().cloned().collect();
            });
            tracing::info!(
                message = "Source opened.",
                path = %path.display(),
                seconds = info.duration_secs(),
                looped
            );
            Ok(Feed::File {
                samples: Arc::new(decoded.samples),
                position: 0,
                looped: *looped,
                gap: 0,
            })
        }
        SourceInput::Mic { device } => {
            let (feed, info) = open_mic(&spec.name, device.clone()).await?;
            hub.update_source(|s| {
                s.display_name = format!("microphone {} ({})", info.name, info.device);
                s.capture_format = Some(capture_format(&info));
                s.model = recognition.model_name.clone();
                s.language_codes = recognition.language.iter().cloned().collect();
            });
            tracing::info!(
                message = "Source opened.",
                device = %info.device,
                rate = info.sample_rate,
                channels = info.channels,
                format = %info.sample_format
            );
            Ok(feed)
        }
    }
}

/// A policy job running on the pool.
struct InFlight {
    id: u64,
    kind: JobKind,
    end_samples: u64,
    output: oneshot::Receiver<JobOutput>,
}

/// One run of a source's recognition pipeline.
struct Pipeline<'a> {
    hub: &'a CaptionHub,
    policy: StreamingPolicy,
    model: usize,
    lease: StreamLease,
    in_flight: Option<InFlight>,
    arrivals: VecDeque<(u64, Instant)>,
    spoke: bool,
    closed_since_poll: bool,
    words: WordOptions,
}

/// The policy settings of a source: the server's flags, interim results on (subscribers
/// choose), the default model's language.
fn policy_config(state: &AppState) -> Result<(PolicyConfig, usize), RequestError> {
    let ready = state.ready()?;
    let recognition = parse_recognition(&RecognitionConfig::default(), "source", &ready.models)?;
    let server = &state.config;
    let mut policy = PolicyConfig {
        language: recognition.language.clone(),
        translate: recognition.translate,
        interim_results: true,
        ..PolicyConfig::default()
    };
    server.apply_policy_flags(&mut policy);
    policy.prompt_max_chars = server.prompt_history;
    Ok((policy, recognition.model))
}

/// Runs the pipeline until the feed ends (after flushing), the server drains (after
/// flushing) or something fails.
async fn pipeline(
    state: &AppState,
    spec: &SourceSpec,
    hub: &CaptionHub,
    feed: &mut Feed,
    lease: StreamLease,
) -> Outcome {
    let (config, model) = match policy_config(state) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e),
    };
    let policy = match StreamingPolicy::new(config) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(RequestError::internal(format!("policy: {e}"))),
    };
    hub.update_source(|s| {
        s.capture_start_time = Some(timestamp_now());
        s.state = SourceState::Active as i32;
        s.status = None;
    });
    let mut run = Pipeline {
        hub,
        policy,
        model,
        lease,
        in_flight: None,
        arrivals: VecDeque::new(),
        spoke: false,
        closed_since_poll: false,
        words: WordOptions {
            offsets: true,
            confidence: true,
            base: Duration::ZERO,
        },
    };
    let speed = state.config.captions.source_speed.max(f64::MIN_POSITIVE);
    let mut ticker = tokio::time::interval(CHUNK.div_f64(speed));
    let mut input_open = true;
    let mut ending = Outcome::Ended;
    loop {
        if let Err(e) = run.dispatch() {
            return Outcome::Failed(e);
        }
        if run.policy.is_done() {
            return ending;
        }
        let job = async {
            match run.in_flight.as_mut() {
                Some(f) => Some((&mut f.output).await),
                None => std::future::pending().await,
            }
        };
        enum Wake {
            Job(Option<Result<JobOutput, oneshot::error::RecvError>>),
            Feed(FeedItem),
            Drain,
        }
        let wake = tokio::select! {
            biased;
            output = job => Wake::Job(output),
            () = state.drain.cancelled(), if input_open => Wake::Drain,
            item = feed.next(&mut ticker, &spec.name), if input_open => Wake::Feed(item),
        };
        let result = match wake {
            Wake::Job(Some(output)) => run.on_output(output),
            Wake::Job(None) => Ok(()),
            Wake::Drain => {
                input_open = false;
                ending = Outcome::Drained;
                let events = run.policy.end_of_stream();
                run.closed_since_poll = true;
                run.emit(events, None)
            }
            Wake::Feed(FeedItem::Audio(chunk)) => {
                let events = run.policy.push_audio(&chunk);
                run.mark_arrival();
                run.emit(events, None)
            }
            Wake::Feed(FeedItem::End) => {
                input_open = false;
                let events = run.policy.end_of_stream();
                run.closed_since_poll = true;
                run.emit(events, None)
            }
            Wake::Feed(FeedItem::Failed(error)) => {
                // Settle what was heard before the device went away, then restart.
                input_open = false;
                ending = Outcome::Failed(error);
                let events = run.policy.end_of_stream();
                run.closed_since_poll = true;
                run.emit(events, None)
            }
        };
        if let Err(e) = result {
            return match e {
                RequestError::Draining => Outcome::Drained,
                other => Outcome::Failed(other),
            };
        }
    }
}

impl Pipeline<'_> {
    fn mark_arrival(&mut self) {
        let clock = self.policy.clock();
        if self.arrivals.len() == MAX_ARRIVAL_MARKS {
            self.arrivals.pop_front();
        }
        self.arrivals.push_back((clock, Instant::now()));
    }

    /// When the audio up to `end` had arrived (marks below the final position are let go).
    fn arrival_of(&mut self, end: u64) -> Option<Instant> {
        let final_samples = self.policy.progress().final_samples;
        while self.arrivals.len() > 1
            && self
                .arrivals
                .get(1)
                .is_some_and(|(c, _)| *c <= final_samples)
        {
            self.arrivals.pop_front();
        }
        self.arrivals
            .iter()
            .find(|(c, _)| *c >= end)
            .map(|(_, t)| *t)
    }

    /// Starts the policy's next job if one is due, after taking back a queued partial made
    /// stale by the end of its utterance (as a StreamingRecognize session does).
    fn dispatch(&mut self) -> Result<(), RequestError> {
        if self.closed_since_poll
            && let Some(f) = self.in_flight.as_ref()
            && f.kind == JobKind::Partial
            && let Some(job) = self.lease.withdraw()
        {
            self.in_flight = None;
            let events = self
                .policy
                .on_result(job.tag, Err(transcribe_core::EngineError::Cancelled));
            self.emit(events, None)?;
        }
        if self.in_flight.is_none()
            && let Some(job) = self.policy.poll_job()
        {
            self.closed_since_poll = false;
            let end_samples = job.end_samples();
            let submitted = self.lease.submit(Job {
                model: self.model,
                samples: job.samples,
                options: job.options,
                tag: job.id,
            });
            self.in_flight = Some(InFlight {
                id: job.id,
                kind: job.kind,
                end_samples,
                output: submitted.output,
            });
        }
        Ok(())
    }

    fn on_output(
        &mut self,
        output: Result<JobOutput, oneshot::error::RecvError>,
    ) -> Result<(), RequestError> {
        let Some(flight) = self.in_flight.take() else {
            return Ok(());
        };
        let Ok(output) = output else {
            // The pool dropped the job: it is shutting down.
            let events = self
                .policy
                .on_result(flight.id, Err(transcribe_core::EngineError::Cancelled));
            self.emit(events, None)?;
            return Err(RequestError::Draining);
        };
        let timing = Timing {
            arrived: self.arrival_of(flight.end_samples),
            inference: output.inference,
        };
        let events = self.policy.on_result(output.tag, output.result);
        if events.is_empty() {
            self.hub
                .publish_heartbeat(self.response(Vec::new(), Some(timing)));
        }
        self.emit(events, Some(timing))
    }

    fn emit(
        &mut self,
        events: Vec<PolicyEvent>,
        timing: Option<Timing>,
    ) -> Result<(), RequestError> {
        for event in events {
            match event {
                PolicyEvent::SpeechStarted { sample } => {
                    self.hub
                        .publish_event(self.event(SpeechEventType::SpeechActivityBegin, sample));
                }
                PolicyEvent::SpeechEnded { sample } => {
                    self.closed_since_poll = true;
                    self.hub
                        .publish_event(self.event(SpeechEventType::SpeechActivityEnd, sample));
                }
                PolicyEvent::Interim {
                    utterance_index,
                    committed,
                    tail,
                    stability_committed,
                    stability_tail,
                    audio_end_samples,
                } => {
                    let end = Some(duration_of_samples(audio_end_samples, Duration::ZERO));
                    let interim = |text: String, stability: f32| StreamingRecognitionResult {
                        alternatives: vec![SpeechRecognitionAlternative {
                            transcript: text,
                            ..Default::default()
                        }],
                        is_final: false,
                        stability,
                        result_end_offset: end,
                        utterance_index,
                        ..Default::default()
                    };
                    let lead = if self.spoke { " " } else { "" };
                    let mut results = Vec::with_capacity(2);
                    if !committed.is_empty() || tail.is_empty() {
                        results.push(interim(format!("{lead}{committed}"), stability_committed));
                    }
                    if !tail.is_empty() {
                        let sep = if committed.is_empty() { lead } else { " " };
                        results.push(interim(format!("{sep}{tail}"), stability_tail));
                    }
                    let response = self.response(results, timing);
                    self.hub.publish_interim(response, utterance_index);
                }
                PolicyEvent::Final {
                    utterance_index,
                    text,
                    words,
                    start_samples,
                    end_samples,
                    language,
                    reason,
                } => {
                    let lead = if self.spoke && !text.is_empty() {
                        " "
                    } else {
                        ""
                    };
                    self.spoke |= !text.is_empty();
                    let result = StreamingRecognitionResult {
                        alternatives: vec![SpeechRecognitionAlternative {
                            transcript: format!("{lead}{text}"),
                            confidence: mean_confidence(&words),
                            words: word_infos(&words, self.words),
                        }],
                        is_final: true,
                        result_end_offset: Some(duration_of_samples(end_samples, Duration::ZERO)),
                        language_code: language.unwrap_or_default(),
                        result_start_offset: Some(duration_of_samples(
                            start_samples,
                            Duration::ZERO,
                        )),
                        utterance_index,
                        ..Default::default()
                    };
                    tracing::debug!(message = "Final.", utterance_index, ?reason);
                    let response = self.response(vec![result], timing);
                    self.hub.publish_final(response, utterance_index);
                }
                PolicyEvent::DecodeFailed {
                    failure,
                    message,
                    job_id,
                    ..
                } => {
                    return Err(match failure {
                        FailureKind::Cancelled => RequestError::Draining,
                        FailureKind::InvalidOptions | FailureKind::Inference => {
                            RequestError::internal(format!("decode {job_id} failed: {message}"))
                        }
                    });
                }
            }
        }
        Ok(())
    }

    fn progress(&self, timing: Option<Timing>) -> Progress {
        let p = self.policy.progress();
        Progress {
            audio_received: Some(duration_of_samples(p.received_samples, Duration::ZERO)),
            audio_processed: Some(duration_of_samples(p.processed_samples, Duration::ZERO)),
            final_offset: Some(duration_of_samples(p.final_samples, Duration::ZERO)),
            response_time: Some(timestamp_now()),
            processing_latency: timing
                .and_then(|t| t.arrived)
                .map(|t| duration_of(t.elapsed())),
            inference_duration: timing.map(|t| duration_of(t.inference)),
        }
    }

    fn response(
        &self,
        results: Vec<StreamingRecognitionResult>,
        timing: Option<Timing>,
    ) -> StreamCaptionsResponse {
        StreamCaptionsResponse {
            results,
            progress: Some(self.progress(timing)),
            ..Default::default()
        }
    }

    fn event(&self, kind: SpeechEventType, sample: u64) -> StreamCaptionsResponse {
        StreamCaptionsResponse {
            speech_event_type: kind as i32,
            speech_event_offset: Some(duration_of_samples(sample, Duration::ZERO)),
            progress: Some(self.progress(None)),
            ..Default::default()
        }
    }
}

/// Decode timing behind a message.
#[derive(Clone, Copy)]
struct Timing {
    arrived: Option<Instant>,
    inference: Duration,
}

/// Checks the sample rate assumption the pacing relies on.
const _: () = assert!(SAMPLE_RATE == 16_000);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() -> Result<(), String> {
        let cases: &[(&str, &str, SourceInput)] = &[
            (
                "file:/tmp/a.wav",
                "a",
                SourceInput::File {
                    path: "/tmp/a.wav".into(),
                    looped: false,
                },
            ),
            (
                "lobby=file:/tmp/a b.flac:loop",
                "lobby",
                SourceInput::File {
                    path: "/tmp/a b.flac".into(),
                    looped: true,
                },
            ),
            ("mic", "mic", SourceInput::Mic { device: None }),
            (
                "room=mic:hw:0,0",
                "room",
                SourceInput::Mic {
                    device: Some("hw:0,0".into()),
                },
            ),
            (
                "file:c:=d.wav",
                "c:=d",
                SourceInput::File {
                    path: "c:=d.wav".into(),
                    looped: false,
                },
            ),
        ];
        for (text, name, input) in cases {
            let spec = SourceSpec::parse(text)?;
            assert_eq!(&spec.name, name, "{text}");
            assert_eq!(&spec.input, input, "{text}");
        }
        for bad in [
            "",
            "file:",
            "mic:",
            "speaker",
            "a b=mic",
            "=mic",
            "file::loop",
        ] {
            assert!(SourceSpec::parse(bad).is_err(), "{bad:?} parsed");
        }
        Ok(())
    }

    #[test]
    fn looping_file_inserts_a_gap() {
        let mut feed = Feed::File {
            samples: Arc::new(vec![1.0; 2_000]),
            position: 0,
            looped: true,
            gap: 0,
        };
        let mut total = 0;
        let mut silent = 0;
        for _ in 0..20 {
            let chunk = feed.next_chunk(1_600).unwrap_or_default();
            total += chunk.len();
            silent += chunk.iter().filter(|s| **s == 0.0).count();
        }
        // Two file ends cut a chunk short; each repeat starts after LOOP_GAP of silence.
        assert_eq!(total, 18 * 1_600 + 2 * 400);
        assert_eq!(silent, 16_000 + 6 * 1_600);
    }

    #[test]
    fn finite_file_ends() {
        let mut feed = Feed::File {
            samples: Arc::new(vec![1.0; 2_000]),
            position: 0,
            looped: false,
            gap: 0,
        };
        assert_eq!(feed.next_chunk(1_600).map(|c| c.len()), Some(1_600));
        assert_eq!(feed.next_chunk(1_600).map(|c| c.len()), Some(400));
        assert_eq!(feed.next_chunk(1_600), None);
    }
}
