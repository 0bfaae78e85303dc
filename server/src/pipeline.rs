//! One recognition pipeline: everything between the streaming policy and a response, for
//! every door that streams (StreamingRecognize sessions, caption sources). It owns the
//! [`StreamingPolicy`], the stream's pool lease, the decode in flight and the arrival marks,
//! and turns policy events into plain [`Update`]s: results, a speech event, progress, and a
//! [`Delivery`] class. A door converts an `Update` into its own message in a few lines and
//! hands it to its queue.
//!
//! ```text
//! door audio ──► push_audio ──► policy ──► events ──► Update ──► door (response, hub)
//!                dispatch  ──► pool queue ──► worker
//!                on_output ◄── output()  ◄──────────┘
//! ```
//!
//! Each step returns [`Emitted`]: the updates to deliver, in order, and the failure that
//! ends the pipeline, if any. Decode failures become request errors through the one mapping,
//! [`RequestError::decode_failed`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use transcribe_core::policy::{FailureKind, JobKind, PolicyEvent};
use transcribe_core::{EngineError, SAMPLE_RATE, StreamingPolicy};
use transcribe_proto::v1::{
    Progress, SpeechEventType, SpeechRecognitionAlternative, StreamingRecognitionResult,
};

use crate::convert::{
    WordOptions, duration_of, duration_of_samples, mean_confidence, timestamp_now, word_infos,
};
use crate::delivery::Delivery;
use crate::error::RequestError;
use crate::metrics::{AudioCounter, Metrics};
use crate::pool::{Job, JobOutput, Priority, StreamLease};

/// Arrival times kept for processing-latency reports: about 7 minutes of 100 ms chunks.
/// Full-policy: the oldest mark is dropped (latency then reads from a later mark).
const MAX_ARRIVAL_MARKS: usize = 4_096;

/// What a door asks of its pipeline.
#[derive(Debug, Clone)]
pub(crate) struct PipelineConfig {
    /// Index of the model in the pool.
    pub model: usize,
    /// What word lists carry, and the offset added to every time (`stream_start_offset`).
    pub words: WordOptions,
    /// Send interim results.
    pub interim_results: bool,
    /// Send voice activity begin/end events.
    pub speech_events: bool,
    /// End the input after the first utterance (`single_utterance`).
    pub single_utterance: bool,
    /// The request's recognition config, as a field path: a decode refused for its options
    /// is a field violation there.
    pub config_field: String,
    /// The door, for metrics: `grpc`, `websocket` or `source`.
    pub door: &'static str,
}

/// One message's worth of pipeline output, before a door gives it its message type (the
/// fields of StreamingRecognizeResponse and StreamCaptionsResponse it fills, by the same
/// names: [`response_of!`]).
#[derive(Debug, Clone)]
pub(crate) struct Update {
    /// Interim (committed, then tail) or final results; empty for events and heartbeats.
    pub results: Vec<StreamingRecognitionResult>,
    /// A `SpeechEventType`, or 0 (unspecified).
    pub speech_event_type: i32,
    /// The speech event's offset.
    pub speech_event_offset: Option<prost_types::Duration>,
    /// Where the stream stands.
    pub progress: Progress,
    /// How a full queue may treat it.
    pub delivery: Delivery,
}

/// A door's response message (`StreamingRecognizeResponse`, `StreamCaptionsResponse`: they
/// share the fields an [`Update`] fills) made from an update.
macro_rules! response_of {
    ($message:ident, $update:expr) => {{
        let update: $crate::pipeline::Update = $update;
        $message {
            results: update.results,
            speech_event_type: update.speech_event_type,
            speech_event_offset: update.speech_event_offset,
            progress: Some(update.progress),
            ..Default::default()
        }
    }};
}
pub(crate) use response_of;

/// What one pipeline step produced: updates to deliver in order, then the failure that
/// ends the pipeline (deliver the updates first).
#[derive(Debug, Default)]
#[must_use = "deliver the updates, then end on the failure"]
pub(crate) struct Emitted {
    pub updates: Vec<Update>,
    pub failure: Option<RequestError>,
}

impl Emitted {
    fn extend(&mut self, other: Self) {
        self.updates.extend(other.updates);
        if self.failure.is_none() {
            self.failure = other.failure;
        }
    }
}

/// A policy job waiting in or running on the pool.
struct InFlight {
    id: u64,
    kind: JobKind,
    end_samples: u64,
    output: oneshot::Receiver<JobOutput>,
}

/// Decode timing behind an update.
#[derive(Clone, Copy)]
struct Timing {
    /// Receipt of the newest audio in the decode.
    arrived: Option<Instant>,
    inference: Duration,
}

/// One stream's recognition pipeline.
pub(crate) struct Pipeline {
    config: PipelineConfig,
    metrics: Arc<Metrics>,
    /// This door's `audio_seconds_total`, bumped per chunk.
    audio_received: AudioCounter,
    /// Whether a result (interim or final) was sent yet (first-result latency).
    answered: bool,
    policy: StreamingPolicy,
    lease: StreamLease,
    in_flight: Option<InFlight>,
    /// (policy clock after a chunk, when the chunk arrived), oldest first.
    arrivals: VecDeque<(u64, Instant)>,
    /// Audio received as the door counts it (before conversion); `None`: the policy's count.
    received: Option<Duration>,
    /// Whether a final with text was sent (later texts get a leading space).
    spoke: bool,
    /// Whether the open utterance closed since the in-flight partial was polled.
    closed_since_poll: bool,
    /// `single_utterance`: the first utterance ended and input is closed.
    input_closed: bool,
}

impl Pipeline {
    /// A pipeline running `policy` on the pool through `lease`.
    pub fn new(
        policy: StreamingPolicy,
        lease: StreamLease,
        config: PipelineConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let audio_received = metrics.audio_counter(config.door, "stream");
        Self {
            config,
            metrics,
            audio_received,
            answered: false,
            policy,
            lease,
            in_flight: None,
            arrivals: VecDeque::new(),
            received: None,
            spoke: false,
            closed_since_poll: false,
            input_closed: false,
        }
    }

    /// Whether every utterance is final after the end of the input.
    pub fn is_done(&self) -> bool {
        self.policy.is_done()
    }

    /// Whether an utterance is open.
    pub fn is_speaking(&self) -> bool {
        self.policy.is_speaking()
    }

    /// Whether the pipeline takes no more audio (`single_utterance` after its utterance).
    pub fn input_closed(&self) -> bool {
        self.input_closed
    }

    /// Reports `received` as the audio received (the door's count before conversion).
    pub fn set_received(&mut self, received: Duration) {
        self.received = Some(received);
    }

    /// Takes 16 kHz mono audio that arrived now.
    pub fn push_audio(&mut self, samples: &[f32]) -> Emitted {
        self.audio_received
            .inc_by(samples.len() as f64 / f64::from(SAMPLE_RATE));
        let events = self.policy.push_audio(samples);
        self.mark_arrival();
        self.emit(events, None)
    }

    /// Closes the open utterance now (the client's FinalizeUtterance).
    pub fn finalize(&mut self) -> Emitted {
        let events = self.policy.finalize();
        self.closed_since_poll = true;
        self.emit(events, None)
    }

    /// No more audio: `tail` (what the converter still held) and the end of the stream.
    pub fn end_of_stream(&mut self, tail: &[f32]) -> Emitted {
        let mut emitted = Emitted::default();
        if !tail.is_empty() {
            emitted = self.push_audio(tail);
        }
        let events = self.policy.end_of_stream();
        self.closed_since_poll = true;
        emitted.extend(self.emit(events, None));
        emitted
    }

    /// Starts the policy's next job if one is due, after taking back a queued partial made
    /// stale by the end of its utterance (its final is more useful).
    pub fn dispatch(&mut self) -> Emitted {
        let mut emitted = Emitted::default();
        if self.closed_since_poll
            && let Some(f) = self.in_flight.as_ref()
            && f.kind == JobKind::Partial
            && let Some(job) = self.lease.withdraw()
        {
            self.in_flight = None;
            let events = self.policy.on_result(job.tag, Err(EngineError::Cancelled));
            emitted = self.emit(events, None);
        }
        if self.in_flight.is_none()
            && let Some(job) = self.policy.poll_job()
        {
            self.closed_since_poll = false;
            let end_samples = job.end_samples();
            let submitted = self.lease.submit(Job {
                model: self.config.model,
                samples: job.samples,
                options: job.options,
                priority: match job.kind {
                    JobKind::Final => Priority::Final,
                    JobKind::Partial => Priority::Partial,
                },
                tag: job.id,
            });
            self.in_flight = Some(InFlight {
                id: job.id,
                kind: job.kind,
                end_samples,
                output: submitted.output,
            });
        }
        emitted
    }

    /// The output of the decode in flight; pending forever without one. Cancel-safe.
    pub async fn output(&mut self) -> Result<JobOutput, oneshot::error::RecvError> {
        match self.in_flight.as_mut() {
            Some(flight) => (&mut flight.output).await,
            None => std::future::pending().await,
        }
    }

    /// A decode's output came back (or its channel closed: the pool shut down).
    pub fn on_output(&mut self, output: Result<JobOutput, oneshot::error::RecvError>) -> Emitted {
        let Some(flight) = self.in_flight.take() else {
            return Emitted::default();
        };
        let output = match output {
            Ok(output) => output,
            Err(_) => {
                // The pool dropped the job: it is shutting down.
                let events = self
                    .policy
                    .on_result(flight.id, Err(EngineError::Cancelled));
                let mut emitted = self.emit(events, None);
                emitted.failure.get_or_insert(RequestError::decode_failed(
                    FailureKind::Cancelled,
                    format!("decode {} dropped by the pool", flight.id),
                    &self.config.config_field,
                ));
                return emitted;
            }
        };
        let timing = Timing {
            arrived: self.arrival_of(flight.end_samples),
            inference: output.inference,
        };
        let kind = match flight.kind {
            JobKind::Partial => "partial",
            JobKind::Final => "final",
        };
        let audio = output.samples as f64 / f64::from(SAMPLE_RATE);
        self.metrics
            .decoded(kind, output.queued, output.inference, audio);
        // One line per decode: `bench/capacity.py` reads these (RUST_LOG=...pipeline=debug).
        tracing::debug!(
            message = "Decode done.",
            job = output.tag,
            kind = kind,
            audio_seconds = audio,
            queued_ms = output.queued.as_secs_f64() * 1e3,
            inference_ms = output.inference.as_secs_f64() * 1e3,
            lag_ms = timing.arrived.map(|t| t.elapsed().as_secs_f64() * 1e3),
        );
        // The policy reports failures as events, except a cancelled decode (it only drops
        // the utterance): one can only come from the pool's shutdown here.
        let cancelled = matches!(output.result, Err(EngineError::Cancelled));
        let events = self.policy.on_result(output.tag, output.result);
        let mut emitted = if events.is_empty() {
            // A heartbeat: progress moved even if the text did not.
            Emitted {
                updates: vec![self.update(Vec::new(), Delivery::Heartbeat, Some(timing))],
                failure: None,
            }
        } else {
            self.emit(events, Some(timing))
        };
        if cancelled {
            emitted.failure.get_or_insert(RequestError::decode_failed(
                FailureKind::Cancelled,
                format!("decode {} cancelled", output.tag),
                &self.config.config_field,
            ));
        }
        emitted
    }

    fn mark_arrival(&mut self) {
        let clock = self.policy.clock();
        if self.arrivals.back().is_some_and(|(c, _)| *c == clock) {
            return;
        }
        if self.arrivals.len() == MAX_ARRIVAL_MARKS {
            self.arrivals.pop_front();
        }
        self.arrivals.push_back((clock, Instant::now()));
    }

    /// When the audio up to `end` (policy clock) had fully arrived.
    fn arrival_of(&mut self, end: u64) -> Option<Instant> {
        // Marks below the final position will not be asked for again.
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

    /// Turns policy events into updates; stops at a failed decode.
    fn emit(&mut self, events: Vec<PolicyEvent>, timing: Option<Timing>) -> Emitted {
        let mut emitted = Emitted::default();
        for event in events {
            match event {
                PolicyEvent::SpeechStarted { sample } => {
                    if self.config.speech_events {
                        let update = self.event(SpeechEventType::SpeechActivityBegin, sample);
                        emitted.updates.push(update);
                    }
                }
                PolicyEvent::SpeechEnded { sample } => {
                    self.closed_since_poll = true;
                    if self.config.speech_events {
                        let update = self.event(SpeechEventType::SpeechActivityEnd, sample);
                        emitted.updates.push(update);
                    }
                    if self.config.single_utterance && !self.input_closed {
                        // Further audio is ignored; the call ends once the final is out.
                        self.input_closed = true;
                        let update = self.event(SpeechEventType::EndOfSingleUtterance, sample);
                        emitted.updates.push(update);
                        let more = self.policy.end_of_stream();
                        emitted.extend(self.emit(more, None));
                        if emitted.failure.is_some() {
                            return emitted;
                        }
                    }
                }
                PolicyEvent::Interim {
                    utterance_index,
                    committed,
                    tail,
                    stability_committed,
                    stability_tail,
                    audio_end_samples,
                } => {
                    if !self.config.interim_results {
                        continue;
                    }
                    let end = Some(duration_of_samples(
                        audio_end_samples,
                        self.config.words.base,
                    ));
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
                    self.observe_latency(timing, false);
                    let update = self.update(results, Delivery::Interim(utterance_index), timing);
                    emitted.updates.push(update);
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
                    let base = self.config.words.base;
                    let result = StreamingRecognitionResult {
                        alternatives: vec![SpeechRecognitionAlternative {
                            transcript: format!("{lead}{text}"),
                            confidence: mean_confidence(&words),
                            words: word_infos(&words, self.config.words),
                        }],
                        is_final: true,
                        result_end_offset: Some(duration_of_samples(end_samples, base)),
                        language_code: language.unwrap_or_default(),
                        result_start_offset: Some(duration_of_samples(start_samples, base)),
                        utterance_index,
                        ..Default::default()
                    };
                    tracing::debug!(
                        message = "Final.",
                        utterance_index,
                        ?reason,
                        words = words.len()
                    );
                    let update =
                        self.update(vec![result], Delivery::Final(utterance_index), timing);
                    emitted.updates.push(update);
                }
                PolicyEvent::DecodeFailed {
                    failure,
                    message,
                    job_id,
                    ..
                } => {
                    tracing::debug!(message = "Decode failed.", job_id, ?failure);
                    emitted.failure = Some(RequestError::decode_failed(
                        failure,
                        message,
                        &self.config.config_field,
                    ));
                    return emitted;
                }
            }
        }
        emitted
    }

    /// Records the latency of a result whose decode is `timing`: the stream's first result,
    /// and every final.
    fn observe_latency(&mut self, timing: Option<Timing>, is_final: bool) {
        let Some(arrived) = timing.and_then(|t| t.arrived) else {
            return;
        };
        let seconds = arrived.elapsed().as_secs_f64();
        if !self.answered {
            self.answered = true;
            self.metrics.first_result_seconds.observe(seconds);
        }
        if is_final {
            self.metrics.final_seconds.observe(seconds);
        }
    }

    fn progress(&self, timing: Option<Timing>) -> Progress {
        let p = self.policy.progress();
        let base = self.config.words.base;
        let received = self
            .received
            .map(|r| duration_of(base + r))
            .unwrap_or_else(|| duration_of_samples(p.received_samples, base));
        Progress {
            audio_received: Some(received),
            audio_processed: Some(duration_of_samples(p.processed_samples, base)),
            final_offset: Some(duration_of_samples(p.final_samples, base)),
            response_time: Some(timestamp_now()),
            processing_latency: timing
                .and_then(|t| t.arrived)
                .map(|t| duration_of(t.elapsed())),
            inference_duration: timing.map(|t| duration_of(t.inference)),
        }
    }

    fn update(
        &self,
        results: Vec<StreamingRecognitionResult>,
        delivery: Delivery,
        timing: Option<Timing>,
    ) -> Update {
        Update {
            results,
            speech_event_type: 0,
            speech_event_offset: None,
            progress: self.progress(timing),
            delivery,
        }
    }

    fn event(&self, kind: SpeechEventType, sample: u64) -> Update {
        Update {
            results: Vec::new(),
            speech_event_type: kind as i32,
            speech_event_offset: Some(duration_of_samples(sample, self.config.words.base)),
            progress: self.progress(None),
            delivery: Delivery::Event,
        }
    }
}
