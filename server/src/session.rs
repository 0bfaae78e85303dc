//! One StreamingRecognize call: a tokio task that reads the config, admits the stream,
//! converts audio, drives the [`StreamingPolicy`], runs its decode jobs on the engine pool
//! and turns policy events into responses.
//!
//! ```text
//! client msgs ──► ingest (convert) ──► policy.push_audio ──► events ──► Outbound ──► client
//!                                      policy.poll_job ──► pool queue ──► worker
//!                                      policy.on_result ◄── oneshot  ◄──┘
//! ```
//! The task ends when the policy is done after the client half-closed (OK), on a request
//! error (its status), when the client goes away (the response stream's drop guard
//! cancels it), or at shutdown (the open utterance is heard to its end, at most half the
//! drain timeout; finals are flushed, then UNAVAILABLE). A message over the transport's size
//! limit ends it with OUT_OF_RANGE (`MESSAGE_TOO_LARGE`), not as a vanished client.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use transcribe_core::audio::seconds_to_samples;
use transcribe_core::policy::{
    DEFAULT_PROMPT_MAX_CHARS, FailureKind, JobKind, PolicyConfig, PolicyEvent,
};
use transcribe_core::{ConfigError, StreamingPolicy};
use transcribe_proto::v1::streaming_recognize_request::StreamingRequest;
use transcribe_proto::v1::{
    Progress, SpeechEventType, SpeechRecognitionAlternative, StreamingRecognitionConfig,
    StreamingRecognitionResult, StreamingRecognizeRequest, StreamingRecognizeResponse,
};

use crate::convert::{
    WordOptions, duration_of, duration_of_samples, mean_confidence, std_duration, timestamp_now,
    word_infos,
};
use crate::error::RequestError;
use crate::ingest::{Ingest, RawFormat};
use crate::pool::{Job, JobOutput, StreamLease};
use crate::service::{AppState, log_request_error, parse_recognition};

/// Arrival times kept for processing-latency reports: about 7 minutes of 100 ms chunks.
/// Full-policy: the oldest mark is dropped (latency then reads from a later mark).
const MAX_ARRIVAL_MARKS: usize = 4_096;

type Outgoing = Result<StreamingRecognizeResponse, Status>;

/// Runs one stream to its end and sends its closing status.
pub(crate) async fn run(
    state: Arc<AppState>,
    mut inbound: Streaming<StreamingRecognizeRequest>,
    tx: mpsc::Sender<Outgoing>,
    cancel: CancellationToken,
    request_id: String,
) {
    let mut out = Outbound::new(tx, request_id);
    let started = Instant::now();
    let result = stream(&state, &mut inbound, &mut out, &cancel).await;
    match result {
        Ok(()) => tracing::info!(
            message = "Stream finished.",
            seconds = started.elapsed().as_secs_f64(),
            dropped_interims = out.dropped
        ),
        Err(error) => {
            // A decode cancelled because the drain ran out of time: the client is still
            // there and hears why.
            let error = match error {
                RequestError::Cancelled if state.drain.is_cancelled() && !cancel.is_cancelled() => {
                    RequestError::Draining
                }
                other => other,
            };
            log_request_error(&error);
            if !matches!(error, RequestError::Cancelled) {
                out.close_with(error.to_status()).await;
            }
        }
    }
}

/// What the config asks of this stream.
struct Setup {
    policy: PolicyConfig,
    format: RawFormat,
    model: usize,
    single_utterance: bool,
    vad_events: bool,
    words: WordOptions,
    base: Duration,
}

/// Validates the first message's config against the server's settings and models.
fn setup(
    state: &AppState,
    config: StreamingRecognitionConfig,
    models: &[crate::models::ModelInfo],
) -> Result<Setup, RequestError> {
    const F: &str = "streaming_config";
    let recognition_config = config
        .config
        .as_ref()
        .ok_or_else(|| RequestError::invalid(format!("{F}.config"), "config is required"))?;
    let recognition = parse_recognition(recognition_config, &format!("{F}.config"), models)?;
    let format = RawFormat::from_proto(
        recognition_config.audio_format.as_ref(),
        &format!("{F}.config.audio_format"),
    )?;

    let server = &state.config;
    let mut policy = PolicyConfig {
        language: recognition.language.clone(),
        translate: recognition.translate,
        initial_prompt: recognition.prompt.clone(),
        interim_results: config.interim_results,
        ..PolicyConfig::default()
    };
    server.apply_policy_flags(&mut policy);
    policy.prompt_max_chars = match recognition.condition_on_previous_text {
        Some(true) if server.prompt_history == 0 => DEFAULT_PROMPT_MAX_CHARS,
        Some(true) | None => server.prompt_history,
        Some(false) => 0,
    };
    let duration = |d: &Option<prost_types::Duration>,
                    field: &str|
     -> Result<Option<Duration>, RequestError> {
        match d {
            None => Ok(None),
            Some(d) => std_duration(d).map(Some).ok_or_else(|| {
                RequestError::invalid(format!("{F}.{field}"), "must be a non-negative duration")
            }),
        }
    };
    if let Some(interval) = duration(&config.interim_results_interval, "interim_results_interval")?
    {
        policy.step_samples = seconds_to_samples(interval.as_secs_f64());
        policy.max_step_samples = policy.max_step_samples.max(policy.step_samples);
    }
    if let Some(ep) = &config.endpointing_config {
        if let Some(s) = duration(
            &ep.min_silence_duration,
            "endpointing_config.min_silence_duration",
        )? {
            policy.vad.end_silence_samples = seconds_to_samples(s.as_secs_f64());
            policy.vad.post_roll_samples = policy
                .vad
                .post_roll_samples
                .min(policy.vad.end_silence_samples);
        }
        if let Some(m) = duration(
            &ep.max_utterance_duration,
            "endpointing_config.max_utterance_duration",
        )? {
            policy.max_utterance_samples = seconds_to_samples(m.as_secs_f64());
            policy.min_partial_samples =
                policy.min_partial_samples.min(policy.max_utterance_samples);
        }
        if let Some(p) = duration(&ep.speech_pad, "endpointing_config.speech_pad")? {
            policy.vad.pre_roll_samples = seconds_to_samples(p.as_secs_f64());
        }
        if let Some(t) = ep.vad_threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(RequestError::invalid(
                    format!("{F}.endpointing_config.vad_threshold"),
                    "must be in [0, 1]",
                ));
            }
            // Our VAD is energy-based: the threshold scales its margin over the noise floor
            // (0.25 is the default 10 dB; 1.0 is 40 dB, the most conservative).
            policy.vad.snr_db = t * VAD_MAX_SNR_DB;
        }
    }
    if let Some(t) = recognition.no_speech_threshold {
        policy.no_speech_threshold = t;
    }
    policy.validate().map_err(|e| config_violation(&e))?;
    let base =
        duration(&config.stream_start_offset, "stream_start_offset")?.unwrap_or(Duration::ZERO);
    if config.voice_activity_timeout.is_some() {
        return Err(RequestError::invalid(
            format!("{F}.voice_activity_timeout"),
            "not supported yet; the server's idle timeout applies",
        ));
    }
    Ok(Setup {
        policy,
        format,
        model: recognition.model,
        single_utterance: config.single_utterance,
        vad_events: config.enable_voice_activity_events,
        words: WordOptions {
            base,
            ..recognition.words
        },
        base,
    })
}

/// The VAD margin that `vad_threshold = 1.0` maps to (the VAD's largest accepted SNR).
const VAD_MAX_SNR_DB: f32 = 40.0;

/// A policy setting the client's values made invalid, as a field violation.
fn config_violation(error: &ConfigError) -> RequestError {
    let field = match error {
        ConfigError::OutOfRange { field, .. } | ConfigError::Inconsistent { field, .. } => *field,
    };
    let request_field = match field {
        "step_samples" | "max_step_samples" => "streaming_config.interim_results_interval",
        "end_silence_samples" | "post_roll_samples" => {
            "streaming_config.endpointing_config.min_silence_duration"
        }
        "max_utterance_samples" | "min_partial_samples" => {
            "streaming_config.endpointing_config.max_utterance_duration"
        }
        "pre_roll_samples" => "streaming_config.endpointing_config.speech_pad",
        "snr_db" => "streaming_config.endpointing_config.vad_threshold",
        "no_speech_threshold" => "streaming_config.config.decoding_options.no_speech_threshold",
        _ => "streaming_config",
    };
    RequestError::invalid(request_field, error.to_string())
}

/// A job of the policy waiting in or running on the pool.
struct InFlight {
    id: u64,
    kind: JobKind,
    end_samples: u64,
    output: oneshot::Receiver<JobOutput>,
}

/// Decode timing behind a response.
#[derive(Clone, Copy)]
struct DecodeTiming {
    /// Receipt of the newest audio in the decode.
    audio_arrived: Option<Instant>,
    inference: Duration,
}

/// The stream's state once the config is accepted.
struct Session {
    setup: Setup,
    policy: StreamingPolicy,
    ingest: Option<Ingest>,
    lease: StreamLease,
    in_flight: Option<InFlight>,
    /// (policy clock after a chunk, when the chunk arrived), oldest first.
    arrivals: VecDeque<(u64, Instant)>,
    received: Duration,
    /// Whether a final with text was sent (later finals get a leading space).
    spoke: bool,
    /// Whether the open utterance closed since the in-flight partial was polled.
    closed_since_poll: bool,
    /// single_utterance: the first utterance ended.
    single_done: bool,
    /// The status to end with after flushing (limit hit or draining).
    ending: Option<RequestError>,
}

enum Wake {
    Cancelled,
    Drain,
    DrainDeadline,
    Idle,
    Message(Box<Result<Option<StreamingRecognizeRequest>, Status>>),
    Job(Result<JobOutput, oneshot::error::RecvError>),
    Flushed,
}

async fn stream(
    state: &AppState,
    inbound: &mut Streaming<StreamingRecognizeRequest>,
    out: &mut Outbound,
    cancel: &CancellationToken,
) -> Result<(), RequestError> {
    let idle = state.config.idle_timeout;
    // 1. The config, first and only first.
    let first = tokio::select! {
        () = cancel.cancelled() => return Err(RequestError::Cancelled),
        () = state.drain.cancelled() => return Err(RequestError::Draining),
        () = tokio::time::sleep(idle) => return Err(RequestError::AudioTimeout { limit: idle }),
        msg = inbound.message() => msg.map_err(|status| inbound_error(state, &status))?,
    };
    let config = match first.and_then(|m| m.streaming_request) {
        Some(StreamingRequest::StreamingConfig(config)) => config,
        Some(_) => {
            return Err(RequestError::invalid(
                "streaming_config",
                "the first message must carry streaming_config (and no audio)",
            ));
        }
        None => {
            return Err(RequestError::invalid(
                "streaming_config",
                "the stream ended before streaming_config was sent",
            ));
        }
    };
    let ready = state.ready()?;
    let setup = setup(state, config, &ready.models)?;
    // 2. Admission.
    let lease = state.admit(ready)?;
    let policy = StreamingPolicy::new(setup.policy.clone()).map_err(|e| config_violation(&e))?;
    let ingest = Ingest::new(setup.format, state.config.max_chunk_bytes)?;
    tracing::info!(
        message = "Stream admitted.",
        model = setup.model,
        rate = setup.format.sample_rate,
        channels = setup.format.channels,
        interim = setup.policy.interim_results,
    );
    let mut session = Session {
        setup,
        policy,
        ingest: Some(ingest),
        lease,
        in_flight: None,
        arrivals: VecDeque::new(),
        received: Duration::ZERO,
        spoke: false,
        closed_since_poll: false,
        single_done: false,
        ending: None,
    };

    // 3. Audio until the policy is done.
    let mut input_open = true;
    let mut idle_deadline = tokio::time::Instant::now() + idle;
    // Set when the server drains mid-utterance: audio is still read until the utterance
    // ends or this deadline (half the drain timeout, leaving the rest for its final).
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        session.dispatch(out).await?;
        if session.policy.is_done() {
            break;
        }
        let wake = {
            let job = async {
                match session.in_flight.as_mut() {
                    Some(f) => (&mut f.output).await,
                    None => std::future::pending().await,
                }
            };
            let has_pending = out.pending.is_some();
            let tx = &out.tx;
            let flush = async {
                match has_pending {
                    true => tx.reserve().await.ok(),
                    false => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => Wake::Cancelled,
                output = job => Wake::Job(output),
                Some(permit) = flush => {
                    if let Some(mut r) = out.pending.take() {
                        if let Some(id) = out.request_id.take() {
                            r.request_id = id;
                        }
                        out.pending_index = None;
                        permit.send(Ok(r));
                    }
                    Wake::Flushed
                }
                () = state.drain.cancelled(), if input_open && drain_deadline.is_none() => {
                    Wake::Drain
                }
                () = sleep_until_some(drain_deadline), if input_open => Wake::DrainDeadline,
                () = tokio::time::sleep_until(idle_deadline), if input_open => Wake::Idle,
                msg = inbound.message(), if input_open => Wake::Message(Box::new(msg)),
            }
        };
        match wake {
            Wake::Cancelled => return Err(RequestError::Cancelled),
            Wake::Flushed => {}
            Wake::Drain if session.policy.is_speaking() => {
                tracing::info!(message = "Draining; finishing the current utterance.");
                drain_deadline = Some(tokio::time::Instant::now() + state.config.drain_timeout / 2);
            }
            Wake::Drain | Wake::DrainDeadline => {
                input_open = false;
                session.end_input(out, Some(RequestError::Draining)).await?;
            }
            Wake::Idle => {
                input_open = false;
                session
                    .end_input(out, Some(RequestError::AudioTimeout { limit: idle }))
                    .await?;
            }
            Wake::Job(output) => session.on_output(output, out).await?,
            Wake::Message(msg) => match *msg {
                Err(status) => {
                    tracing::debug!(message = "Client stream failed.", %status);
                    return Err(inbound_error(state, &status));
                }
                Ok(None) => {
                    input_open = false;
                    session.end_input(out, None).await?;
                }
                Ok(Some(msg)) => {
                    // Only audio counts as activity: empty chunks or bare FinalizeUtterance
                    // messages must not hold a stream (and its place) open forever.
                    if matches!(&msg.streaming_request,
                        Some(StreamingRequest::AudioContent(bytes)) if !bytes.is_empty())
                    {
                        idle_deadline = tokio::time::Instant::now() + idle;
                    }
                    let limit = state.config.max_stream_duration;
                    session.on_message(msg, out, limit).await?;
                    if session.ingest.is_none() {
                        input_open = false;
                    } else if drain_deadline.is_some() && !session.policy.is_speaking() {
                        // Draining and the utterance ended: take no more audio.
                        input_open = false;
                        session.end_input(out, Some(RequestError::Draining)).await?;
                    }
                }
            },
        }
    }
    out.flush_pending().await;
    match session.ending.take() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What a failed read of the client's stream means: tonic answers a message over
/// `--max-message-bytes` with OUT_OF_RANGE; anything else is the client going away.
fn inbound_error(state: &AppState, status: &Status) -> RequestError {
    if status.code() == tonic::Code::OutOfRange {
        RequestError::MessageTooLarge {
            limit: state.config.max_message_bytes,
        }
    } else {
        RequestError::Cancelled
    }
}

impl Session {
    /// Handles one client message after the config.
    async fn on_message(
        &mut self,
        msg: StreamingRecognizeRequest,
        out: &mut Outbound,
        max_duration: Duration,
    ) -> Result<(), RequestError> {
        match msg.streaming_request {
            Some(StreamingRequest::AudioContent(bytes)) => {
                let Some(ingest) = self.ingest.as_mut() else {
                    return Ok(());
                };
                let samples = ingest.push(&bytes)?;
                self.received = ingest.received();
                if self.received > max_duration {
                    return self
                        .end_input(
                            out,
                            Some(RequestError::StreamTooLong {
                                limit: max_duration,
                            }),
                        )
                        .await;
                }
                let events = self.policy.push_audio(&samples);
                self.mark_arrival();
                self.emit(events, None, out).await
            }
            Some(StreamingRequest::FinalizeUtterance(_)) => {
                let events = self.policy.finalize();
                self.closed_since_poll = true;
                self.emit(events, None, out).await
            }
            Some(StreamingRequest::StreamingConfig(_)) => Err(RequestError::invalid(
                "streaming_config",
                "streaming_config may only be sent once, in the first message",
            )),
            None => Err(RequestError::invalid("streaming_request", "empty message")),
        }
    }

    /// No more audio will be taken: flush the converter, end the policy's stream and
    /// remember the status to end with.
    async fn end_input(
        &mut self,
        out: &mut Outbound,
        ending: Option<RequestError>,
    ) -> Result<(), RequestError> {
        if ending.is_some() && self.ending.is_none() {
            self.ending = ending;
        }
        let mut events = Vec::new();
        if let Some(ingest) = self.ingest.take() {
            let tail = ingest.finish();
            events.extend(self.policy.push_audio(&tail));
            self.mark_arrival();
        }
        events.extend(self.policy.end_of_stream());
        self.closed_since_poll = true;
        self.emit(events, None, out).await
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

    /// Starts the policy's next job if one is due, after taking back a queued partial made
    /// stale by the end of its utterance (its final is more useful).
    async fn dispatch(&mut self, out: &mut Outbound) -> Result<(), RequestError> {
        if self.closed_since_poll
            && let Some(f) = self.in_flight.as_ref()
            && f.kind == JobKind::Partial
            && let Some(job) = self.lease.withdraw()
        {
            self.in_flight = None;
            let events = self
                .policy
                .on_result(job.tag, Err(transcribe_core::EngineError::Cancelled));
            self.emit(events, None, out).await?;
        }
        if self.in_flight.is_none()
            && let Some(job) = self.policy.poll_job()
        {
            self.closed_since_poll = false;
            let end_samples = job.end_samples();
            let submitted = self.lease.submit(Job {
                model: self.setup.model,
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

    /// A job's output came back (or its channel closed: the pool shut down).
    async fn on_output(
        &mut self,
        output: Result<JobOutput, oneshot::error::RecvError>,
        out: &mut Outbound,
    ) -> Result<(), RequestError> {
        let Some(flight) = self.in_flight.take() else {
            return Ok(());
        };
        let output = match output {
            Ok(output) => output,
            Err(_) => {
                // The pool dropped the job: it is shutting down.
                let events = self
                    .policy
                    .on_result(flight.id, Err(transcribe_core::EngineError::Cancelled));
                self.emit(events, None, out).await?;
                return Err(RequestError::Draining);
            }
        };
        let timing = DecodeTiming {
            audio_arrived: self.arrival_of(flight.end_samples),
            inference: output.inference,
        };
        tracing::debug!(
            message = "Decode done.",
            job = output.tag,
            kind = ?flight.kind,
            audio_seconds = output.samples as f64 / 16_000.0,
            queued_ms = output.queued.as_millis() as u64,
            inference_ms = output.inference.as_millis() as u64,
        );
        let events = self.policy.on_result(output.tag, output.result);
        let quiet = events.is_empty();
        self.emit(events, Some(timing), out).await?;
        if quiet {
            // A heartbeat: progress moved even if the text did not.
            let response = self.response(Vec::new(), Some(timing));
            out.offer(response, None);
        }
        Ok(())
    }

    /// Turns policy events into responses and sends them.
    async fn emit(
        &mut self,
        events: Vec<PolicyEvent>,
        timing: Option<DecodeTiming>,
        out: &mut Outbound,
    ) -> Result<(), RequestError> {
        for event in events {
            match event {
                PolicyEvent::SpeechStarted { sample } => {
                    if self.setup.vad_events {
                        let r = self.event_response(SpeechEventType::SpeechActivityBegin, sample);
                        out.send(r, None).await?;
                    }
                }
                PolicyEvent::SpeechEnded { sample } => {
                    self.closed_since_poll = true;
                    if self.setup.vad_events {
                        let r = self.event_response(SpeechEventType::SpeechActivityEnd, sample);
                        out.send(r, None).await?;
                    }
                    if self.setup.single_utterance && !self.single_done {
                        self.single_done = true;
                        let r = self.event_response(SpeechEventType::EndOfSingleUtterance, sample);
                        out.send(r, None).await?;
                        // Further audio is ignored; the call ends once the final is out.
                        self.ingest = None;
                        let more = self.policy.end_of_stream();
                        Box::pin(self.emit(more, None, out)).await?;
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
                    if !self.setup.policy.interim_results {
                        continue;
                    }
                    let end = Some(duration_of_samples(audio_end_samples, self.setup.base));
                    let mut results = Vec::with_capacity(2);
                    let interim = |text: String, stability: f32| StreamingRecognitionResult {
                        alternatives: vec![SpeechRecognitionAlternative {
                            transcript: text,
                            confidence: 0.0,
                            words: Vec::new(),
                        }],
                        is_final: false,
                        stability,
                        result_end_offset: end,
                        utterance_index,
                        ..Default::default()
                    };
                    let lead = if self.spoke { " " } else { "" };
                    if !committed.is_empty() || tail.is_empty() {
                        results.push(interim(format!("{lead}{committed}"), stability_committed));
                    }
                    if !tail.is_empty() {
                        let sep = if committed.is_empty() { lead } else { " " };
                        results.push(interim(format!("{sep}{tail}"), stability_tail));
                    }
                    let response = self.response(results, timing);
                    out.offer(response, Some(utterance_index));
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
                            words: word_infos(&words, self.setup.words),
                        }],
                        is_final: true,
                        stability: 0.0,
                        result_end_offset: Some(duration_of_samples(end_samples, self.setup.base)),
                        channel_tag: 0,
                        language_code: language.unwrap_or_default(),
                        result_start_offset: Some(duration_of_samples(
                            start_samples,
                            self.setup.base,
                        )),
                        utterance_index,
                        language_confidence: 0.0,
                    };
                    tracing::debug!(
                        message = "Final.",
                        utterance_index,
                        ?reason,
                        words = words.len()
                    );
                    let response = self.response(vec![result], timing);
                    out.send(response, Some(utterance_index)).await?;
                }
                PolicyEvent::DecodeFailed {
                    failure,
                    message,
                    job_id,
                    ..
                } => {
                    return Err(match failure {
                        FailureKind::InvalidOptions => {
                            RequestError::invalid("streaming_config.config", message)
                        }
                        FailureKind::Inference => {
                            RequestError::internal(format!("decode {job_id} failed: {message}"))
                        }
                        FailureKind::Cancelled => RequestError::Cancelled,
                    });
                }
            }
        }
        Ok(())
    }

    fn progress(&self, timing: Option<DecodeTiming>) -> Progress {
        let p = self.policy.progress();
        let base = self.setup.base;
        Progress {
            audio_received: Some(duration_of(base + self.received)),
            audio_processed: Some(duration_of_samples(p.processed_samples, base)),
            final_offset: Some(duration_of_samples(p.final_samples, base)),
            response_time: Some(timestamp_now()),
            processing_latency: timing
                .and_then(|t| t.audio_arrived)
                .map(|t| duration_of(t.elapsed())),
            inference_duration: timing.map(|t| duration_of(t.inference)),
        }
    }

    fn response(
        &self,
        results: Vec<StreamingRecognitionResult>,
        timing: Option<DecodeTiming>,
    ) -> StreamingRecognizeResponse {
        StreamingRecognizeResponse {
            results,
            progress: Some(self.progress(timing)),
            ..Default::default()
        }
    }

    fn event_response(&self, kind: SpeechEventType, sample: u64) -> StreamingRecognizeResponse {
        StreamingRecognizeResponse {
            speech_event_type: kind as i32,
            speech_event_offset: Some(duration_of_samples(sample, self.setup.base)),
            progress: Some(self.progress(None)),
            ..Default::default()
        }
    }
}

/// The stream's side of the outbound channel, with the "latest interim wins" slot.
pub(crate) struct Outbound {
    tx: mpsc::Sender<Outgoing>,
    /// The newest droppable response not yet sent (interim or heartbeat) and its utterance.
    pending: Option<StreamingRecognizeResponse>,
    pending_index: Option<u64>,
    /// Put on the first response that leaves.
    request_id: Option<String>,
    /// Droppable responses replaced before they could be sent.
    dropped: u64,
}

impl Outbound {
    fn new(tx: mpsc::Sender<Outgoing>, request_id: String) -> Self {
        Self {
            tx,
            pending: None,
            pending_index: None,
            request_id: Some(request_id),
            dropped: 0,
        }
    }

    fn stamp(&mut self, response: &mut StreamingRecognizeResponse) {
        if let Some(id) = self.request_id.take() {
            response.request_id = id;
        }
    }

    /// Offers a droppable response: it replaces any waiting one and goes out now if there
    /// is room.
    fn offer(&mut self, response: StreamingRecognizeResponse, index: Option<u64>) {
        if self.pending.replace(response).is_some() {
            self.dropped += 1;
        }
        self.pending_index = index;
        self.try_flush();
    }

    fn try_flush(&mut self) {
        let Some(mut response) = self.pending.take() else {
            return;
        };
        self.stamp(&mut response);
        match self.tx.try_send(Ok(response)) {
            Ok(()) => self.pending_index = None,
            Err(mpsc::error::TrySendError::Full(Ok(mut response))) => {
                if !response.request_id.is_empty() {
                    self.request_id = Some(std::mem::take(&mut response.request_id));
                }
                self.pending = Some(response);
            }
            // Closed: the client is gone; the session notices through its cancel token.
            Err(_) => {}
        }
    }

    /// Sends a response that must not be dropped, waiting for room. A waiting interim that
    /// this final supersedes (same or older utterance, or a heartbeat) is discarded.
    async fn send(
        &mut self,
        mut response: StreamingRecognizeResponse,
        final_index: Option<u64>,
    ) -> Result<(), RequestError> {
        if self.pending.is_some() {
            let superseded = match (self.pending_index, final_index) {
                (None, _) => true,
                (Some(p), Some(f)) => p <= f,
                (Some(_), None) => false,
            };
            if superseded {
                self.pending = None;
                self.pending_index = None;
                self.dropped += 1;
            } else {
                self.flush_pending().await;
            }
        }
        self.stamp(&mut response);
        self.tx
            .send(Ok(response))
            .await
            .map_err(|_| RequestError::Cancelled)
    }

    /// Sends the waiting droppable response, if any.
    async fn flush_pending(&mut self) {
        if let Some(mut response) = self.pending.take() {
            self.pending_index = None;
            self.stamp(&mut response);
            let _ = self.tx.send(Ok(response)).await;
        }
    }

    /// Ends the call with `status`.
    async fn close_with(&mut self, status: Status) {
        let _ = self.tx.send(Err(status)).await;
    }
}
