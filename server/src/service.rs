//! The `transcribe.v1.TranscriptionService` implementation: the gRPC door. StreamingRecognize
//! hands each call to a per-stream task ([`crate::session`]); StreamCaptions subscribes to a
//! caption hub ([`crate::captions`]); Recognize decodes the whole upload as one job;
//! ListModels answers from what is loaded.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::DropGuard;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use transcribe_core::SAMPLE_RATE;
use transcribe_proto::v1::transcription_service_server::TranscriptionService;
use transcribe_proto::v1::{
    AudioEncoding, ListModelsRequest, ListModelsResponse, Model, ModelState, RecognitionMetadata,
    RecognizeRequest, RecognizeResponse, StreamCaptionsRequest, StreamCaptionsResponse,
    StreamingRecognizeRequest, StreamingRecognizeResponse, recognize_request::AudioSource,
};

use crate::captions::SubscribeOptions;
use crate::convert::{duration_of, duration_of_seconds, segment_result};
use crate::error::RequestError;
use crate::ingest::{Ingest, RawFormat, STREAMING_ENCODINGS};
use crate::recognition::parse_recognition;
use crate::session;
use crate::state::AppState;
use crate::unary;

/// Encodings Recognize accepts besides the streaming ones (decoded from their container).
const CONTAINER_ENCODINGS: [AudioEncoding; 6] = [
    AudioEncoding::Unspecified,
    AudioEncoding::Wav,
    AudioEncoding::Flac,
    AudioEncoding::Mp3,
    AudioEncoding::OggOpus,
    AudioEncoding::WebmOpus,
];

/// The door's name in metrics.
const DOOR: &str = "grpc";

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
            self.state.count_refusal(&error);
            return Err(error.to_status());
        }
        // tonic answers a message over --max-message-bytes with OUT_OF_RANGE; any other
        // failure to read the client's stream is the client going away.
        let limit = self.state.config.max_message_bytes;
        let inbound = request.into_inner().map(move |message| {
            message.map_err(|status| match status.code() {
                tonic::Code::OutOfRange => RequestError::MessageTooLarge { limit },
                _ => RequestError::Cancelled,
            })
        });
        let started = session::start(
            self.state.clone(),
            Box::pin(inbound),
            DOOR,
            request_id.clone(),
            span,
        );
        let stream = SessionStream {
            inner: started.responses,
            _guard: started.guard,
        };
        Ok(with_request_id(Response::new(stream), &request_id))
    }

    async fn recognize(
        &self,
        request: Request<RecognizeRequest>,
    ) -> Result<Response<RecognizeResponse>, Status> {
        let request_id = self.state.request_id();
        let span = tracing::info_span!("recognize", request_id = %request_id);
        let mut call = self.state.metrics.call(DOOR, "unary");
        let result = self
            .state
            .calls
            .track_future(recognize(&self.state, request.into_inner(), &request_id))
            .instrument(span.clone())
            .await;
        self.state
            .call_ended(&mut call, result.as_ref().map(|_| ()));
        match result {
            Ok(response) => Ok(with_request_id(Response::new(response), &request_id)),
            Err(error) => {
                span.in_scope(|| error.log());
                Err(error.to_status())
            }
        }
    }

    async fn stream_captions(
        &self,
        request: Request<StreamCaptionsRequest>,
    ) -> Result<Response<Self::StreamCaptionsStream>, Status> {
        let request_id = self.state.request_id();
        let stream = subscribe_captions(&self.state, &request.into_inner(), &request_id)
            .map_err(|error| error.to_status())?;
        Ok(with_request_id(Response::new(stream), &request_id))
    }

    async fn list_models(
        &self,
        _request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        Ok(Response::new(list_models(&self.state)))
    }
}

/// What is served (ListModels, and the browser page's `/v1/info`).
pub(crate) fn list_models(state: &AppState) -> ListModelsResponse {
    let ready = state.ready.get();
    let models = state
        .names
        .iter()
        .map(|name| {
            let info = ready.and_then(|r| r.models.iter().find(|m| &m.name == name));
            let english_only = info.map_or(name.ends_with(".en"), |i| !i.multilingual);
            let mut encodings: Vec<i32> = STREAMING_ENCODINGS.iter().map(|e| *e as i32).collect();
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
    ListModelsResponse {
        models,
        default_model: state.names.first().cloned().unwrap_or_default(),
    }
}

/// A StreamCaptions subscription (gRPC, and the WebSocket door's `/v1/captions`); a refusal
/// is logged and counted here.
pub(crate) fn subscribe_captions(
    state: &AppState,
    request: &StreamCaptionsRequest,
    request_id: &str,
) -> Result<CaptionStream, RequestError> {
    let span = tracing::info_span!("captions", request_id = %request_id, source = %request.source);
    let subscribed = (|| {
        state.ready()?;
        let options = SubscribeOptions::from_request(request)?;
        let hub = state.captions.find(&request.source)?;
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
            Ok(Box::pin(stream))
        }
        Err(error) => {
            span.in_scope(|| error.log());
            state.count_refusal(&error);
            Err(error)
        }
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
    let recognized = unary::recognize(state, &recognition, samples, "config", DOOR).await?;
    let language = recognized.language.as_deref();
    let results = recognized
        .segments
        .iter()
        .map(|segment| segment_result(segment, language, recognition.words))
        .collect();
    Ok(RecognizeResponse {
        results,
        metadata: Some(RecognitionMetadata {
            request_id: request_id.to_owned(),
            model: recognition.model_name,
            audio_duration: Some(duration_of_seconds(recognized.audio_seconds)),
            processing_duration: Some(duration_of(started.elapsed())),
        }),
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
    // Containers are sniffed from the bytes themselves, in memory; "content" names them in
    // errors.
    let decoded = transcribe_audio::decode_bytes(content, "content")
        .map_err(|e| RequestError::invalid("content", e.to_string()))?;
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
