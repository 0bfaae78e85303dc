//! The `transcribe.v1.TranscriptionService` implementation: request validation shared by
//! both recognition RPCs, ListModels, unary Recognize, and the wiring of StreamingRecognize
//! to a per-stream task ([`crate::session`]).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use transcribe_core::policy::{DEFAULT_LOGPROB_THRESHOLD, DEFAULT_NO_SPEECH_THRESHOLD};
use transcribe_core::{DecodeOptions, SAMPLE_RATE, Transcript};
use transcribe_proto::v1::transcription_service_server::TranscriptionService;
use transcribe_proto::v1::{
    AudioEncoding, ListModelsRequest, ListModelsResponse, Model, ModelState, RecognitionConfig,
    RecognitionMetadata, RecognizeRequest, RecognizeResponse, StreamCaptionsRequest,
    StreamCaptionsResponse, StreamingRecognizeRequest, StreamingRecognizeResponse,
    recognize_request::AudioSource,
};

use crate::captions::{CaptionRegistry, SubscribeOptions};
use crate::config::ServerConfig;
use crate::convert::{WordOptions, duration_of, duration_of_seconds, segment_result};
use crate::error::{Capacity, RequestError};
use crate::ingest::{Ingest, RawFormat, STREAMING_ENCODINGS};
use crate::models::ModelInfo;
use crate::pool::{AdmitError, EnginePool, Job, StreamLease};

/// Responses a stream may have waiting for the client. Full-policy: interim results and
/// heartbeats keep only the latest (a newer one replaces the waiting one); finals, speech
/// events and the closing status wait for room (the client's HTTP/2 window pushes back on
/// the session, never on other streams).
pub const OUTBOUND_CAPACITY: usize = 16;

/// Encodings Recognize accepts besides the streaming ones (decoded from their container).
const CONTAINER_ENCODINGS: [AudioEncoding; 5] = [
    AudioEncoding::Unspecified,
    AudioEncoding::Wav,
    AudioEncoding::Flac,
    AudioEncoding::Mp3,
    AudioEncoding::OggOpus,
];

/// The loaded half of the server: the pool and what it serves.
pub(crate) struct Ready {
    pub pool: EnginePool,
    pub models: Vec<ModelInfo>,
}

/// State shared by every RPC.
pub(crate) struct AppState {
    pub config: ServerConfig,
    /// Served names, the default first (known before loading).
    pub names: Vec<String>,
    pub ready: OnceLock<Ready>,
    /// Cancelled when draining starts: sessions flush their finals and end with UNAVAILABLE.
    pub drain: CancellationToken,
    pub draining: AtomicBool,
    /// StreamingRecognize and Recognize calls in progress (from the call's start, before
    /// its config is read, to its end); see [`CallGuard`].
    pub open_calls: AtomicUsize,
    /// The caption sources' broadcast hubs (`--source`), known before loading.
    pub captions: CaptionRegistry,
    next_request: AtomicU64,
    instance: u32,
}

impl AppState {
    pub fn new(config: ServerConfig, names: Vec<String>) -> Self {
        let instance = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ (d.as_secs() as u32));
        let captions =
            CaptionRegistry::new(&config.sources, config.captions, config.max_subscribers);
        Self {
            config,
            names,
            captions,
            ready: OnceLock::new(),
            drain: CancellationToken::new(),
            draining: AtomicBool::new(false),
            open_calls: AtomicUsize::new(0),
            next_request: AtomicU64::new(1),
            instance,
        }
    }

    /// Counts a call as open until the guard is dropped (on any exit, panics included).
    pub fn open_call(self: &Arc<Self>) -> CallGuard {
        self.open_calls.fetch_add(1, Ordering::SeqCst);
        CallGuard(self.clone())
    }

    /// A new request id, unique within this process and unlikely to repeat across restarts.
    pub fn request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{n:06}", self.instance)
    }

    /// The pool and models, or UNAVAILABLE while loading or draining.
    pub fn ready(&self) -> Result<&Ready, RequestError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(RequestError::Draining);
        }
        self.ready.get().ok_or(RequestError::Loading)
    }

    /// Admits a stream into the pool.
    pub fn admit(&self, ready: &Ready) -> Result<StreamLease, RequestError> {
        ready.pool.admit().map_err(|e| match e {
            AdmitError::Closed => RequestError::Draining,
            AdmitError::TooManyStreams { .. } => RequestError::Overloaded {
                capacity: Capacity::Streams,
                reason: e.to_string(),
            },
            AdmitError::QueueFull { .. } => RequestError::Overloaded {
                capacity: Capacity::Queue,
                reason: e.to_string(),
            },
        })
    }
}

/// One open StreamingRecognize or Recognize call in [`AppState::open_calls`].
pub(crate) struct CallGuard(Arc<AppState>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.open_calls.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Settings shared by Recognize and StreamingRecognize, validated.
#[derive(Debug, Clone)]
pub(crate) struct Recognition {
    /// Index of the model in the pool.
    pub model: usize,
    pub model_name: String,
    pub language: Option<String>,
    pub translate: bool,
    pub prompt: Option<String>,
    pub words: WordOptions,
    pub no_speech_threshold: Option<f32>,
    /// `decoding_options.condition_on_previous_text`, if set.
    pub condition_on_previous_text: Option<bool>,
}

/// Validates a `RecognitionConfig` (all but its audio format). `field` is its path in the
/// request, for field violations.
pub(crate) fn parse_recognition(
    config: &RecognitionConfig,
    field: &str,
    models: &[ModelInfo],
) -> Result<Recognition, RequestError> {
    let (model, info) = if config.model.is_empty() {
        models.first().map(|m| (0, m))
    } else {
        models
            .iter()
            .enumerate()
            .find(|(_, m)| m.name == config.model)
    }
    .ok_or_else(|| RequestError::UnknownModel {
        name: config.model.clone(),
        valid: models.iter().map(|m| m.name.clone()).collect(),
    })?;

    let language = match config.language_codes.as_slice() {
        [] => None,
        [code] => {
            let primary = code
                .split(['-', '_'])
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            if primary.is_empty() || !transcribe_engine::is_known_language(&primary) {
                return Err(RequestError::invalid(
                    format!("{field}.language_codes"),
                    format!(
                        "{code:?} is not a language Whisper knows (use a BCP-47 code like en-US)"
                    ),
                ));
            }
            if !info.multilingual && primary != "en" {
                return Err(RequestError::invalid(
                    format!("{field}.language_codes"),
                    format!(
                        "model {} is English-only; it cannot recognize {code:?}",
                        info.name
                    ),
                ));
            }
            Some(primary)
        }
        _ => {
            return Err(RequestError::invalid(
                format!("{field}.language_codes"),
                "give at most one language (several to choose from are not supported yet)",
            ));
        }
    };
    // English-only models know one language; saying so keeps whisper.cpp's language
    // detection (meaningless on them) out of the results.
    let language = if info.multilingual {
        language
    } else {
        Some("en".to_owned())
    };
    let translate = match config.task() {
        transcribe_proto::v1::Task::Translate => {
            if !info.multilingual {
                return Err(RequestError::invalid(
                    format!("{field}.task"),
                    format!(
                        "model {} is English-only; translation needs a multilingual model",
                        info.name
                    ),
                ));
            }
            true
        }
        _ => false,
    };
    if config.enable_separate_recognition_per_channel {
        return Err(RequestError::invalid(
            format!("{field}.enable_separate_recognition_per_channel"),
            "not supported: channels are averaged to mono",
        ));
    }
    if config.profanity_filter {
        return Err(RequestError::invalid(
            format!("{field}.profanity_filter"),
            "not supported",
        ));
    }
    if config.max_alternatives < 0 {
        return Err(RequestError::invalid(
            format!("{field}.max_alternatives"),
            "must not be negative",
        ));
    }
    let mut prompt = config.prompt.trim().to_owned();
    for phrase in config.speech_contexts.iter().flat_map(|c| c.phrases.iter()) {
        if !phrase.trim().is_empty() {
            if !prompt.is_empty() {
                prompt.push_str(", ");
            }
            prompt.push_str(phrase.trim());
        }
    }
    let no_speech_threshold = match config
        .decoding_options
        .as_ref()
        .and_then(|d| d.no_speech_threshold)
    {
        Some(t) if !(0.0..=1.0).contains(&t) => {
            return Err(RequestError::invalid(
                format!("{field}.decoding_options.no_speech_threshold"),
                "must be in [0, 1]",
            ));
        }
        other => other,
    };
    Ok(Recognition {
        model,
        model_name: info.name.clone(),
        language,
        translate,
        prompt: (!prompt.is_empty()).then_some(prompt),
        words: WordOptions {
            offsets: config.enable_word_time_offsets,
            confidence: config.enable_word_confidence,
            base: Duration::ZERO,
        },
        no_speech_threshold,
        condition_on_previous_text: config
            .decoding_options
            .as_ref()
            .and_then(|d| d.condition_on_previous_text),
    })
}

/// The gRPC service.
pub(crate) struct Service {
    pub state: Arc<AppState>,
}

/// A response stream that cancels its session when tonic drops it (client gone).
pub struct SessionStream {
    inner: ReceiverStream<Result<StreamingRecognizeResponse, Status>>,
    _guard: DropGuard,
}

impl Stream for SessionStream {
    type Item = Result<StreamingRecognizeResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// A StreamCaptions response stream (a [`crate::captions::SubscriberStream`]).
pub type CaptionStream = Pin<Box<dyn Stream<Item = Result<StreamCaptionsResponse, Status>> + Send>>;

fn with_request_id<T>(mut response: Response<T>, request_id: &str) -> Response<T> {
    if let Ok(value) = MetadataValue::try_from(request_id) {
        response.metadata_mut().insert("x-request-id", value);
    }
    response
}

#[tonic::async_trait]
impl TranscriptionService for Service {
    type StreamingRecognizeStream = SessionStream;
    type StreamCaptionsStream = CaptionStream;

    async fn streaming_recognize(
        &self,
        request: Request<Streaming<StreamingRecognizeRequest>>,
    ) -> Result<Response<Self::StreamingRecognizeStream>, Status> {
        let request_id = self.state.request_id();
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let span = tracing::info_span!("stream", request_id = %request_id, %peer);
        // Refuse at once (before any message) when the server cannot take a stream.
        if let Err(error) = self.state.ready() {
            span.in_scope(|| tracing::info!(message = "Stream refused.", %error));
            return Err(error.to_status());
        }
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let cancel = CancellationToken::new();
        let stream = SessionStream {
            inner: ReceiverStream::new(rx),
            _guard: cancel.clone().drop_guard(),
        };
        let state = self.state.clone();
        let panic_tx = tx.clone();
        let id = request_id.clone();
        let call = self.state.open_call();
        let task = tokio::spawn(
            async move {
                let _call = call;
                crate::session::run(state, inbound, tx, cancel, id).await;
            }
            .instrument(span.clone()),
        );
        // A panic in the session ends only this stream, with INTERNAL (not a silent OK).
        tokio::spawn(
            async move {
                if let Err(error) = task.await
                    && error.is_panic()
                {
                    tracing::error!(message = "Stream task panicked.");
                    let status = RequestError::internal("stream task panicked").to_status();
                    let _ = panic_tx.send(Err(status)).await;
                }
            }
            .instrument(span),
        );
        Ok(with_request_id(Response::new(stream), &request_id))
    }

    async fn recognize(
        &self,
        request: Request<RecognizeRequest>,
    ) -> Result<Response<RecognizeResponse>, Status> {
        let request_id = self.state.request_id();
        let span = tracing::info_span!("recognize", request_id = %request_id);
        let _call = self.state.open_call();
        let result = recognize(&self.state, request.into_inner(), &request_id)
            .instrument(span.clone())
            .await;
        match result {
            Ok(response) => Ok(with_request_id(Response::new(response), &request_id)),
            Err(error) => {
                span.in_scope(|| log_request_error(&error));
                Err(error.to_status())
            }
        }
    }

    async fn stream_captions(
        &self,
        request: Request<StreamCaptionsRequest>,
    ) -> Result<Response<Self::StreamCaptionsStream>, Status> {
        let request_id = self.state.request_id();
        let request = request.into_inner();
        let span =
            tracing::info_span!("captions", request_id = %request_id, source = %request.source);
        let subscribed = (|| {
            self.state.ready()?;
            let options = SubscribeOptions::from_request(&request)?;
            let hub = self.state.captions.find(&request.source)?;
            hub.subscribe(options)
        })();
        match subscribed {
            Ok(stream) => {
                span.in_scope(|| {
                    tracing::info!(
                        message = "Caption subscriber joined.",
                        history = request.history_size,
                        interim = request.interim_results
                    );
                });
                let stream: CaptionStream = Box::pin(stream);
                Ok(with_request_id(Response::new(stream), &request_id))
            }
            Err(error) => {
                span.in_scope(|| log_request_error(&error));
                Err(error.to_status())
            }
        }
    }

    async fn list_models(
        &self,
        _request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let ready = self.state.ready.get();
        let models = self
            .state
            .names
            .iter()
            .map(|name| {
                let info = ready.and_then(|r| r.models.iter().find(|m| &m.name == name));
                let english_only = info.map_or(name.ends_with(".en"), |i| !i.multilingual);
                let mut encodings: Vec<i32> =
                    STREAMING_ENCODINGS.iter().map(|e| *e as i32).collect();
                encodings.extend(CONTAINER_ENCODINGS.iter().skip(1).map(|e| *e as i32));
                Model {
                    name: name.clone(),
                    display_name: format!("Whisper {name}"),
                    language_codes: if english_only {
                        vec!["en".into()]
                    } else {
                        vec![]
                    },
                    sample_rate_hertz: SAMPLE_RATE as i32,
                    supported_encodings: encodings,
                    supports_translation: !english_only,
                    supports_word_time_offsets: true,
                    supports_streaming: true,
                    state: if info.is_some() {
                        ModelState::Ready
                    } else {
                        ModelState::Loading
                    } as i32,
                    attributes: info
                        .map(|i| i.attributes.clone().into_iter().collect())
                        .unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(ListModelsResponse {
            models,
            default_model: self.state.names.first().cloned().unwrap_or_default(),
        }))
    }
}

/// Logs a failed request at a level that fits who is at fault.
pub(crate) fn log_request_error(error: &RequestError) {
    match error {
        RequestError::Internal { detail } => {
            tracing::error!(message = "Request failed.", %detail);
        }
        RequestError::Cancelled => tracing::debug!(message = "Request cancelled."),
        other => tracing::info!(message = "Request refused.", error = %other),
    }
}

/// Unary recognition: decode the whole audio, one job.
async fn recognize(
    state: &AppState,
    request: RecognizeRequest,
    request_id: &str,
) -> Result<RecognizeResponse, RequestError> {
    let started = Instant::now();
    let ready = state.ready()?;
    let config = request
        .config
        .ok_or_else(|| RequestError::invalid("config", "config is required"))?;
    let recognition = parse_recognition(&config, "config", &ready.models)?;
    let content = match request.audio_source {
        Some(AudioSource::Content(bytes)) => bytes,
        Some(AudioSource::Uri(_)) => {
            return Err(RequestError::PermissionDenied {
                what: "audio uri: this server reads no server-side files; send content".into(),
            });
        }
        None => {
            return Err(RequestError::invalid(
                "content",
                "audio content is required",
            ));
        }
    };
    let samples = decode_content(&content, config.audio_format.as_ref())?;
    let audio_seconds = samples.len() as f64 / f64::from(SAMPLE_RATE);
    let limit = state.config.max_unary_audio;
    if audio_seconds > limit.as_secs_f64() {
        return Err(RequestError::UnaryAudioTooLong {
            limit,
            got: Duration::from_secs_f64(audio_seconds),
        });
    }
    let lease = state.admit(ready)?;
    let options = DecodeOptions {
        language: recognition.language.clone(),
        translate: recognition.translate,
        prompt: recognition.prompt.clone(),
        audio_ctx: None,
        word_timestamps: recognition.words.any(),
        temperature_fallback: true,
        max_tokens: None,
        single_segment: false,
    };
    let submitted = lease.submit(Job {
        model: recognition.model,
        samples,
        options,
        tag: 0,
    });
    // A drain lets the decode finish; only the pool's shutdown at the drain's deadline
    // drops it (the channel closes).
    let output = submitted.output.await.map_err(|_| RequestError::Draining)?;
    drop(lease);
    let transcript = output.result.map_err(|e| match e {
        // Only the pool's shutdown cancels a unary decode.
        transcribe_core::EngineError::Cancelled => RequestError::Draining,
        other => other.into(),
    })?;
    let threshold = recognition
        .no_speech_threshold
        .unwrap_or(DEFAULT_NO_SPEECH_THRESHOLD);
    let results = keep_speech(&transcript, threshold)
        .map(|segment| segment_result(segment, transcript.language.as_deref(), recognition.words))
        .collect();
    tracing::info!(
        message = "Recognized.",
        audio_seconds,
        queued_seconds = output.queued.as_secs_f64(),
        inference_seconds = output.inference.as_secs_f64(),
    );
    Ok(RecognizeResponse {
        results,
        metadata: Some(RecognitionMetadata {
            request_id: request_id.to_owned(),
            model: recognition.model_name,
            audio_duration: Some(duration_of_seconds(audio_seconds)),
            processing_duration: Some(duration_of(started.elapsed())),
        }),
    })
}

/// Segments that are not silence by Whisper's own test (openai/whisper `transcribe.py`: a
/// segment is skipped when `no_speech_prob > no_speech_threshold` and
/// `avg_logprob < logprob_threshold`) and have text.
fn keep_speech(
    transcript: &Transcript,
    no_speech_threshold: f32,
) -> impl Iterator<Item = &transcribe_core::Segment> {
    transcript.segments.iter().filter(move |s| {
        let silent =
            s.no_speech_prob > no_speech_threshold && s.avg_logprob < DEFAULT_LOGPROB_THRESHOLD;
        !silent && !s.text.trim().is_empty()
    })
}

/// Decodes unary content: headerless PCM by its declared format, containers by sniffing.
fn decode_content(
    content: &[u8],
    format: Option<&transcribe_proto::v1::AudioFormat>,
) -> Result<Vec<f32>, RequestError> {
    let encoding = format.map_or(AudioEncoding::Unspecified, |f| f.encoding());
    if STREAMING_ENCODINGS.contains(&encoding) {
        let raw = RawFormat::from_proto(format, "config.audio_format")?;
        let mut ingest = Ingest::new(raw, content.len().max(1))?;
        let mut samples = ingest.push(content).map_err(|e| match e {
            RequestError::InvalidArgument { description, .. } => {
                RequestError::invalid("content", description)
            }
            other => other,
        })?;
        samples.extend(ingest.finish());
        return Ok(samples);
    }
    if !CONTAINER_ENCODINGS.contains(&encoding) {
        return Err(RequestError::invalid(
            "config.audio_format.encoding",
            format!("{} is not supported", encoding.as_str_name()),
        ));
    }
    // The audio crate decodes files; the content goes through a private temporary file.
    let mut file = tempfile::NamedTempFile::new()
        .map_err(|e| RequestError::internal(format!("creating a temporary file: {e}")))?;
    std::io::Write::write_all(&mut file, content)
        .map_err(|e| RequestError::internal(format!("writing a temporary file: {e}")))?;
    let decoded = transcribe_audio::decode_file(file.path()).map_err(|e| {
        RequestError::invalid("content", strip_temp_path(&e.to_string(), file.path()))
    })?;
    if let Some(f) = format
        && f.sample_rate_hertz != 0
        && u32::try_from(f.sample_rate_hertz).ok() != Some(decoded.info.sample_rate)
    {
        return Err(RequestError::invalid(
            "config.audio_format.sample_rate_hertz",
            format!(
                "{} Hz disagrees with the content's header ({} Hz); use 0 to take the header's",
                f.sample_rate_hertz, decoded.info.sample_rate
            ),
        ));
    }
    Ok(decoded.samples)
}

fn strip_temp_path(message: &str, path: &std::path::Path) -> String {
    message.replace(&path.display().to_string(), "content")
}
