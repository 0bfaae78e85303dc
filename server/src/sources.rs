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

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use transcribe_core::audio::seconds_to_samples;
use transcribe_core::{SAMPLE_RATE, StreamingPolicy};
use transcribe_proto::v1::{
    AudioEncoding, AudioFormat, RecognitionConfig, SourceState, SourceStatus,
    StreamCaptionsResponse,
};

use crate::captions::CaptionHub;
use crate::config::{SourceInput, SourceSpec};
use crate::convert::timestamp_now;
use crate::error::RequestError;
use crate::pipeline::{Emitted, Pipeline, response_of};
use crate::pool::{JobOutput, StreamLease};
use crate::recognition::{parse_recognition, source_setup};
use crate::state::AppState;

mod mic;

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
    /// A running capture (dropping the feed stops it).
    Mic(mic::MicFeed),
}

/// What the feed gave.
enum FeedItem {
    Audio(Vec<f32>),
    End,
    /// Only a microphone fails (a build without capture has none).
    #[cfg_attr(not(feature = "capture"), allow(dead_code))]
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
            Self::Mic(feed) => feed.next(name).await,
        }
    }

    /// Whether a failure should reopen the device (a file keeps its place).
    fn reopens(&self) -> bool {
        matches!(self, Self::Mic(_))
    }

    /// A file's next chunk of `len` samples, `None` at the end of a finite file.
    fn next_chunk(&mut self, len: usize) -> Option<Vec<f32>> {
        match self {
            Self::Mic(_) => None,
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
                    Ok(lease) => run_pipeline(&state, &spec, &hub, feed, lease).await,
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
            let (feed, info) = mic::open(&spec.name, device.clone()).await?;
            hub.update_source(|s| {
                s.display_name = format!("microphone {} ({})", info.name, info.device);
                s.capture_format = Some(info.format);
                s.model = recognition.model_name.clone();
                s.language_codes = recognition.language.iter().cloned().collect();
            });
            tracing::info!(
                message = "Source opened.",
                device = %info.device,
                rate = info.format.sample_rate_hertz,
                channels = info.format.audio_channel_count,
                format = %info.sample_format
            );
            Ok(Feed::Mic(feed))
        }
    }
}

/// Runs the pipeline until the feed ends (after flushing), the server drains (after
/// flushing) or something fails.
async fn run_pipeline(
    state: &AppState,
    spec: &SourceSpec,
    hub: &CaptionHub,
    feed: &mut Feed,
    lease: StreamLease,
) -> Outcome {
    let setup = state
        .ready()
        .and_then(|ready| source_setup(&state.config, &ready.models));
    let (policy_config, pipeline_config) = match setup {
        Ok(setup) => setup,
        Err(e) => return Outcome::Failed(e),
    };
    let policy = match StreamingPolicy::new(policy_config) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(RequestError::internal(format!("policy: {e}"))),
    };
    hub.update_source(|s| {
        s.capture_start_time = Some(timestamp_now());
        s.state = SourceState::Active as i32;
        s.status = None;
    });
    let mut pipeline = Pipeline::new(policy, lease, pipeline_config, state.metrics.clone());
    let speed = state.config.captions.source_speed.max(f64::MIN_POSITIVE);
    let mut ticker = tokio::time::interval(CHUNK.div_f64(speed));
    let mut input_open = true;
    let mut ending = Outcome::Ended;
    loop {
        if let Err(e) = publish(hub, pipeline.dispatch()) {
            return Outcome::Failed(e);
        }
        if pipeline.is_done() {
            return ending;
        }
        enum Wake {
            Job(Result<JobOutput, oneshot::error::RecvError>),
            Feed(FeedItem),
            Drain,
        }
        let wake = tokio::select! {
            biased;
            output = pipeline.output() => Wake::Job(output),
            () = state.drain.cancelled(), if input_open => Wake::Drain,
            item = feed.next(&mut ticker, &spec.name), if input_open => Wake::Feed(item),
        };
        let emitted = match wake {
            Wake::Job(output) => pipeline.on_output(output),
            Wake::Feed(FeedItem::Audio(chunk)) => pipeline.push_audio(&chunk),
            // The input ends: settle what was heard, then end as the cause says (a device
            // that went away restarts).
            closing => {
                input_open = false;
                match closing {
                    Wake::Drain => ending = Outcome::Drained,
                    Wake::Feed(FeedItem::Failed(error)) => ending = Outcome::Failed(error),
                    _ => {}
                }
                pipeline.end_of_stream(&[])
            }
        };
        if let Err(e) = publish(hub, emitted) {
            return match e {
                RequestError::Draining => Outcome::Drained,
                other => Outcome::Failed(other),
            };
        }
    }
}

/// Publishes a pipeline step's updates to the hub in order, then ends on its failure.
fn publish(hub: &CaptionHub, emitted: Emitted) -> Result<(), RequestError> {
    for update in emitted.updates {
        let delivery = update.delivery;
        hub.publish(response_of!(StreamCaptionsResponse, update), delivery);
    }
    emitted.failure.map_or(Ok(()), Err)
}

/// Checks the sample rate assumption the pacing relies on.
const _: () = assert!(SAMPLE_RATE == 16_000);

#[cfg(test)]
mod tests {
    use super::*;

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
