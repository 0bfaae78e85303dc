//! A Rust client for the streaming API: [`stream_samples`] sends 16 kHz mono audio to a
//! server (paced like a live source or as fast as the server takes it) and reports interim
//! and final results as [`StreamEvent`]s. `transcribe --server URL FILE` and the end-to-end
//! tests use it.
//!
//! Where to connect is a [`Target`]: the URL (`http://` or `https://`), optionally a private
//! CA to trust for `https://` and a bearer token sent on every call (the server's
//! `--auth-token-file`). A plain `&str` URL converts into a `Target` with neither.
//!
//! # Example
//! ```no_run
//! use transcribe_client::{StreamEvent, StreamOptions, stream_samples};
//! # async fn demo(samples: Vec<f32>) -> Result<(), transcribe_client::ClientError> {
//! let summary = stream_samples("http://127.0.0.1:50051", &samples, &StreamOptions::default(), |event| {
//!     if let StreamEvent::Final(f) = event {
//!         println!("{}", f.text);
//!     }
//! })
//! .await?;
//! println!("{} finals", summary.finals.len());
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - this module: [`Target`], [`connect`], [`stream_samples`], [`StreamEvent`] and the
//!   results they carry, [`ClientError`].
//! - [`latency`]: client-side latency measures over a traced stream (word emission,
//!   interim, finalisation; percentiles), shared by the benchmark and the soak tool.
#![warn(missing_docs)]

pub mod latency;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use transcribe_core::{SAMPLE_RATE, Word};
use transcribe_proto::v1::streaming_recognize_request::StreamingRequest;
use transcribe_proto::v1::transcription_service_client::TranscriptionServiceClient;
use transcribe_proto::v1::{
    AudioEncoding, AudioFormat, RecognitionConfig, StreamingRecognitionConfig,
    StreamingRecognizeRequest, StreamingRecognizeResponse,
};

use transcribe_proto::auth::{AUTHORIZATION, BEARER, TokenFileError, read_token_file};
use transcribe_proto::duration::to_std as std_duration;

/// Requests buffered between the pacing task and the transport. Full-policy: the pacer
/// waits (HTTP/2 flow control then pushes back on it).
pub const REQUEST_BUFFER: usize = 8;

/// Default chunk: 100 ms (the API recommends 20-200 ms).
pub const DEFAULT_CHUNK: Duration = Duration::from_millis(100);

/// How to stream.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Pace chunks in real time, like a live source; otherwise send as fast as the server
    /// takes them.
    pub realtime: bool,
    /// Audio per message.
    pub chunk: Duration,
    /// Ask for interim results.
    pub interim_results: bool,
    /// Ask for word offsets and confidences in finals.
    pub word_time_offsets: bool,
    /// Model name; `None` uses the server's default.
    pub model: Option<String>,
    /// Language (BCP-47 or ISO 639-1); `None` detects it.
    pub language: Option<String>,
    /// Translate to English.
    pub translate: bool,
    /// A decoder prompt (names, spellings).
    pub prompt: Option<String>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            realtime: false,
            chunk: DEFAULT_CHUNK,
            interim_results: true,
            word_time_offsets: true,
            model: None,
            language: None,
            translate: false,
            prompt: None,
        }
    }
}

/// Something the server said about the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The current hypothesis of an utterance; replaces earlier interims with the same
    /// index. Both texts empty: clear the utterance's interim text.
    Interim {
        /// Which utterance.
        utterance_index: u64,
        /// Text the server has committed (will not change).
        stable: String,
        /// The unconfirmed rest (may change).
        unstable: String,
    },
    /// The settled text of an utterance.
    Final(FinalResult),
    /// Only progress moved (a heartbeat), or a speech event.
    Progress {
        /// Audio the server has run through the model, in seconds.
        processed: f64,
        /// Wall time from receipt of the newest decoded audio to the response, if known.
        latency: Option<Duration>,
    },
}

/// A final result.
#[derive(Debug, Clone, PartialEq)]
pub struct FinalResult {
    /// Which utterance.
    pub utterance_index: u64,
    /// Its text, trimmed.
    pub text: String,
    /// Start of the utterance's audio, seconds from the stream start.
    pub start: f64,
    /// End of the utterance's audio.
    pub end: f64,
    /// Its words with times (seconds from the stream start) and probabilities.
    pub words: Vec<Word>,
    /// Language reported by the server, if any.
    pub language: Option<String>,
}

/// What a finished stream produced.
#[derive(Debug, Clone, Default)]
pub struct StreamSummary {
    /// The server's request id.
    pub request_id: String,
    /// Finals in order.
    pub finals: Vec<FinalResult>,
    /// Responses received.
    pub responses: usize,
    /// Wall time of the whole call.
    pub elapsed: Duration,
}

impl StreamSummary {
    /// The finals' texts joined by spaces.
    pub fn text(&self) -> String {
        transcribe_core::transcript::join_texts(self.finals.iter().map(|f| f.text.as_str()))
    }
}

/// Why a stream failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A file named on the command line (CA, token) could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    ReadFile {
        /// What the file is for ("CA file", "token file").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate. Give the CA's certificate in PEM form
    /// (`-----BEGIN CERTIFICATE-----`).
    #[error("no PEM certificate in CA file {}", path.display())]
    BadCaFile {
        /// The file.
        path: PathBuf,
    },
    /// The bearer token cannot be sent (see the reason; the token itself is never shown).
    #[error("unusable bearer token{}: {reason}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    BadToken {
        /// The token file, when it came from one.
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
    },
    /// The URL is not a valid endpoint. Use e.g. `http://127.0.0.1:50051`.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The server could not be reached. Check that it runs and the address.
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL given.
        url: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server ended the call with an error status (see its code and message;
    /// RESOURCE_EXHAUSTED and UNAVAILABLE may succeed on retry).
    #[error("server error {:?}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
}

// Not `#[from]`: that would make the status the error's source, and `{:#}` would print its
// code and message twice.
impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

/// A server to connect to: its URL, a private CA for `https://`, a bearer token. `Debug`
/// never shows the token.
#[derive(Clone, Default)]
pub struct Target {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// PEM certificates to trust for `https://` instead of the public roots.
    ca_pem: Option<Vec<u8>>,
    /// The `authorization` value (`Bearer <token>`), marked sensitive.
    authorization: Option<MetadataValue<Ascii>>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("private_ca", &self.ca_pem.is_some())
            .field("token", &self.authorization.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl From<&str> for Target {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<String> for Target {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

impl From<&String> for Target {
    fn from(url: &String) -> Self {
        Self::new(url.as_str())
    }
}

impl From<&Target> for Target {
    fn from(target: &Target) -> Self {
        target.clone()
    }
}

impl Target {
    /// `url` with no private CA and no token.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Whether the URL asks for TLS.
    pub fn is_https(&self) -> bool {
        self.url
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    }

    /// Trusts the PEM certificate(s) of `path` (a private CA) for `https://`, instead of the
    /// public roots.
    ///
    /// # Errors
    /// [`ClientError::ReadFile`] or [`ClientError::BadCaFile`], naming `path`.
    pub fn with_ca_file(mut self, path: &Path) -> Result<Self, ClientError> {
        let pem = std::fs::read(path).map_err(|source| ClientError::ReadFile {
            what: "CA file",
            path: path.to_owned(),
            source,
        })?;
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
        if !certs.is_ok_and(|c| !c.is_empty()) {
            return Err(ClientError::BadCaFile {
                path: path.to_owned(),
            });
        }
        self.ca_pem = Some(pem);
        Ok(self)
    }

    /// Sends `token` as `authorization: Bearer <token>` on every call.
    ///
    /// # Errors
    /// [`ClientError::BadToken`] when it is empty or not a single word of visible ASCII.
    pub fn with_token(self, token: &str) -> Result<Self, ClientError> {
        self.token_from(token.trim(), None)
    }

    /// Sends the first token of the token file at `path` (the server's format: one token
    /// per line, blank lines and `#` comments ignored).
    ///
    /// # Errors
    /// [`ClientError::ReadFile`] or [`ClientError::BadToken`], naming `path`.
    pub fn with_token_file(self, path: &Path) -> Result<Self, ClientError> {
        let tokens = read_token_file(path).map_err(|e| match e {
            TokenFileError::Read { path, source } => ClientError::ReadFile {
                what: "token file",
                path,
                source,
            },
            TokenFileError::Invalid { path, source } => ClientError::BadToken {
                path: Some(path),
                reason: source.to_string(),
            },
        })?;
        let first = tokens.first().map(String::as_str).unwrap_or_default();
        self.token_from(first, Some(path))
    }

    fn token_from(mut self, token: &str, path: Option<&Path>) -> Result<Self, ClientError> {
        let bad = |reason: &str| ClientError::BadToken {
            path: path.map(Path::to_owned),
            reason: reason.to_owned(),
        };
        if token.is_empty() {
            return Err(bad("it is empty"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("it must be one word of visible ASCII"));
        }
        let mut value: MetadataValue<Ascii> =
            MetadataValue::try_from(format!("{} {token}", BEARER))
                .map_err(|_| bad("it cannot go into a header"))?;
        // Never indexed by HPACK, never shown by `Debug`.
        value.set_sensitive(true);
        self.authorization = Some(value);
        Ok(self)
    }

    /// Whether a token is sent.
    pub fn has_token(&self) -> bool {
        self.authorization.is_some()
    }

    /// The endpoint for this target: TLS with the private CA (or the public roots) for
    /// `https://`.
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] for a bad URL, or a CA given with an `http://` URL.
    pub fn endpoint(&self) -> Result<Endpoint, ClientError> {
        let invalid = |reason: String| ClientError::InvalidUrl {
            url: self.url.clone(),
            reason,
        };
        let endpoint =
            Channel::from_shared(self.url.clone()).map_err(|e| invalid(e.to_string()))?;
        match &self.ca_pem {
            Some(_) if !self.is_https() => Err(invalid(
                "a CA file was given, so use an https:// URL (this one is plaintext)".into(),
            )),
            Some(pem) => endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(|e| invalid(e.to_string())),
            // https:// without a CA: tonic trusts the public (webpki) roots.
            None => Ok(endpoint),
        }
    }

    /// Connects a channel (for health or reflection clients; it sends no token).
    ///
    /// # Errors
    /// As [`Target::endpoint`], or [`ClientError::Connect`].
    pub async fn channel(&self) -> Result<Channel, ClientError> {
        if self.authorization.is_some() && !self.is_https() && !is_loopback_url(&self.url) {
            tracing::warn!(
                message = "Sending a bearer token over plaintext; use an https:// URL.",
                url = %self.url
            );
        }
        self.endpoint()?
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                url: self.url.clone(),
                source,
            })
    }

    /// The interceptor adding this target's token to every call.
    pub fn bearer(&self) -> Bearer {
        Bearer(self.authorization.clone())
    }
}

/// Whether `url`'s host is loopback (`localhost`, `127.x`, `[::1]`).
fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<tonic::codegen::http::Uri>() else {
        return false;
    };
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An interceptor that adds `authorization: Bearer <token>` to every call (nothing when
/// the target has no token).
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<redacted>)"
        } else {
            "Bearer(None)"
        })
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert(AUTHORIZATION, value.clone());
        }
        Ok(request)
    }
}

/// A client of the transcription service that sends the target's token on every call.
pub type ServiceClient = TranscriptionServiceClient<InterceptedService<Channel, Bearer>>;

/// Connects to `target` (a URL, or a [`Target`] with a CA and a token).
///
/// # Errors
/// [`ClientError::InvalidUrl`] or [`ClientError::Connect`].
pub async fn connect(target: impl Into<Target>) -> Result<ServiceClient, ClientError> {
    let target = target.into();
    let channel = target.channel().await?;
    Ok(TranscriptionServiceClient::with_interceptor(
        channel,
        target.bearer(),
    ))
}

/// The first request of a stream for `options` (16 kHz mono FLOAT32).
pub fn streaming_config(options: &StreamOptions) -> StreamingRecognizeRequest {
    let config = RecognitionConfig {
        audio_format: Some(AudioFormat {
            encoding: AudioEncoding::Float32.into(),
            sample_rate_hertz: SAMPLE_RATE as i32,
            audio_channel_count: 1,
        }),
        model: options.model.clone().unwrap_or_default(),
        language_codes: options.language.iter().cloned().collect(),
        task: if options.translate {
            transcribe_proto::v1::Task::Translate
        } else {
            transcribe_proto::v1::Task::Transcribe
        } as i32,
        enable_word_time_offsets: options.word_time_offsets,
        enable_word_confidence: options.word_time_offsets,
        prompt: options.prompt.clone().unwrap_or_default(),
        ..Default::default()
    };
    StreamingRecognizeRequest {
        streaming_request: Some(StreamingRequest::StreamingConfig(
            StreamingRecognitionConfig {
                config: Some(config),
                interim_results: options.interim_results,
                ..Default::default()
            },
        )),
    }
}

/// Streams `samples` (16 kHz mono, `[-1, 1]`) to the server at `target` and calls `on_event`
/// for every result as it arrives; returns when the server has sent its last final.
///
/// # Errors
/// [`ClientError`] when the server cannot be reached or ends the call with an error.
pub async fn stream_samples(
    target: impl Into<Target>,
    samples: &[f32],
    options: &StreamOptions,
    on_event: impl FnMut(StreamEvent),
) -> Result<StreamSummary, ClientError> {
    let mut client = connect(target).await?;
    stream_with(&mut client, samples, options, on_event).await
}

/// [`stream_samples`] on an existing client.
///
/// # Errors
/// [`ClientError::Status`] when the server ends the call with an error.
pub async fn stream_with(
    client: &mut ServiceClient,
    samples: &[f32],
    options: &StreamOptions,
    mut on_event: impl FnMut(StreamEvent),
) -> Result<StreamSummary, ClientError> {
    let started = Instant::now();
    let (sender, requests) = paced_requests(samples, options);
    let response = client.streaming_recognize(requests).await;
    let mut inbound = match response {
        Ok(r) => r.into_inner(),
        Err(status) => {
            sender.abort();
            return Err(status.into());
        }
    };
    let mut summary = StreamSummary::default();
    let result = loop {
        match inbound.message().await {
            Ok(Some(response)) => {
                summary.responses += 1;
                if summary.request_id.is_empty() {
                    summary.request_id.clone_from(&response.request_id);
                }
                for event in events_of(&response) {
                    if let StreamEvent::Final(f) = &event {
                        summary.finals.push(f.clone());
                    }
                    on_event(event);
                }
            }
            Ok(None) => break Ok(()),
            Err(status) => break Err(ClientError::Status(status)),
        }
    };
    sender.abort();
    summary.elapsed = started.elapsed();
    result.map(|()| summary)
}

/// Spawns the task that sends [`streaming_config`] for `options`, then `samples` (16 kHz
/// mono) as FLOAT32 chunks of `options.chunk`, paced in real time when `options.realtime`,
/// and half-closes. Returns the task and the request stream to pass to
/// `streaming_recognize`; dropping the stream (or aborting the task) stops the sending.
pub fn paced_requests(
    samples: &[f32],
    options: &StreamOptions,
) -> (
    tokio::task::JoinHandle<()>,
    ReceiverStream<StreamingRecognizeRequest>,
) {
    let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
    let chunk_samples = ((options.chunk.as_secs_f64() * f64::from(SAMPLE_RATE)) as usize).max(1);
    let audio: Vec<f32> = samples.to_vec();
    let config = streaming_config(options);
    let realtime = options.realtime;
    let chunk = options.chunk;
    let sender = tokio::spawn(async move {
        if tx.send(config).await.is_err() {
            return;
        }
        let mut ticker = tokio::time::interval(chunk);
        for piece in audio.chunks(chunk_samples) {
            if realtime {
                ticker.tick().await;
            }
            let bytes: Vec<u8> = piece.iter().flat_map(|s| s.to_le_bytes()).collect();
            let request = StreamingRecognizeRequest {
                streaming_request: Some(StreamingRequest::AudioContent(bytes)),
            };
            if tx.send(request).await.is_err() {
                return;
            }
        }
        // Dropping `tx` half-closes the request stream: end of audio.
    });
    (sender, ReceiverStream::new(rx))
}

fn seconds(d: Option<&prost_types::Duration>) -> f64 {
    d.and_then(std_duration).map_or(0.0, |d| d.as_secs_f64())
}

/// The events in one response (interims merged per utterance).
pub fn events_of(response: &StreamingRecognizeResponse) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    let mut interim: Option<(u64, String, String)> = None;
    for result in &response.results {
        let Some(top) = result.alternatives.first() else {
            continue;
        };
        if result.is_final {
            let words = top
                .words
                .iter()
                .map(|w| Word {
                    text: w.word.clone(),
                    start: seconds(w.start_offset.as_ref()),
                    end: seconds(w.end_offset.as_ref()),
                    probability: w.confidence,
                })
                .collect();
            events.push(StreamEvent::Final(FinalResult {
                utterance_index: result.utterance_index,
                text: top.transcript.trim().to_owned(),
                start: seconds(result.result_start_offset.as_ref()),
                end: seconds(result.result_end_offset.as_ref()),
                words,
                language: (!result.language_code.is_empty()).then(|| result.language_code.clone()),
            }));
        } else {
            let entry = interim
                .get_or_insert_with(|| (result.utterance_index, String::new(), String::new()));
            let text = top.transcript.trim();
            // Stability >= 0.5 is the committed part, below is the tail.
            let part = if result.stability >= 0.5 {
                &mut entry.1
            } else {
                &mut entry.2
            };
            if !text.is_empty() {
                if !part.is_empty() {
                    part.push(' ');
                }
                part.push_str(text);
            }
        }
    }
    if let Some((utterance_index, stable, unstable)) = interim {
        events.push(StreamEvent::Interim {
            utterance_index,
            stable,
            unstable,
        });
    }
    if response.results.is_empty() {
        let progress = response.progress.as_ref();
        events.push(StreamEvent::Progress {
            processed: seconds(progress.and_then(|p| p.audio_processed.as_ref())),
            latency: progress
                .and_then(|p| p.processing_latency.as_ref())
                .and_then(std_duration),
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_never_show_their_token() -> Result<(), ClientError> {
        let target = Target::new("https://example.test:50051").with_token("s3cret-token")?;
        assert!(target.has_token() && target.is_https());
        let shown = format!("{target:?} {:?}", target.bearer());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
        Ok(())
    }

    #[test]
    fn bad_tokens_are_refused_without_echo() {
        for token in ["", "two words", "caf\u{e9}"] {
            let error = Target::new("http://127.0.0.1:1").with_token(token).err();
            assert!(
                matches!(&error, Some(ClientError::BadToken { .. })),
                "{token:?}: {error:?}"
            );
            let message = error.map(|e| e.to_string()).unwrap_or_default();
            assert!(token.is_empty() || !message.contains(token), "{message}");
        }
    }

    #[test]
    fn bearer_adds_the_header() -> Result<(), Box<dyn std::error::Error>> {
        let target = Target::new("http://127.0.0.1:1").with_token("abc")?;
        let request = target.bearer().call(tonic::Request::new(()))?;
        let value = request.metadata().get(AUTHORIZATION);
        assert_eq!(value.map(|v| v.to_str().ok()), Some(Some("Bearer abc")));
        let request = Target::new("http://127.0.0.1:1")
            .bearer()
            .call(tonic::Request::new(()))?;
        assert!(request.metadata().get(AUTHORIZATION).is_none());
        Ok(())
    }

    #[test]
    fn missing_files_are_named() {
        let path = Path::new("/nonexistent/ca.pem");
        let message = Target::new("https://localhost:1")
            .with_ca_file(path)
            .err()
            .map(|e| e.to_string());
        assert!(message.is_some_and(|m| m.contains("/nonexistent/ca.pem")));
        let path = Path::new("/nonexistent/token");
        let message = Target::new("https://localhost:1")
            .with_token_file(path)
            .err()
            .map(|e| e.to_string());
        assert!(message.is_some_and(|m| m.contains("/nonexistent/token")));
    }

    #[test]
    fn loopback_urls_are_recognised() {
        assert!(is_loopback_url("http://127.0.0.1:50051"));
        assert!(is_loopback_url("http://localhost:50051"));
        assert!(is_loopback_url("http://[::1]:50051"));
        assert!(!is_loopback_url("http://10.0.0.2:50051"));
        assert!(!is_loopback_url("http://example.test"));
    }
}
