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
//! # Surviving the server
//! With [`StreamOptions::retry`] set, a stream outlives its server: when the call fails
//! with UNAVAILABLE (a draining server, a balancer with no backend), RESOURCE_EXHAUSTED
//! (after the server's RetryInfo), a reset connection, or the server's stream-length limit,
//! (or, once a server was reached, the connection is refused), the client waits
//! (exponential backoff with jitter) and opens a new call to the same address, sending again the audio no final covers yet with `stream_start_offset`, so
//! times stay on the original clock, utterance indices continue, and no final is reported
//! twice. It gives up with [`ClientError::GaveUp`] once failures have lasted
//! [`RetryPolicy::give_up_after`]. Each resume is reported as [`StreamEvent::Resuming`].
//! [`resume`] has the rules; off by default (a failed call is returned as it is).
//!
//! # Layout
//! - this module: [`Target`], [`connect`], [`stream_samples`], [`stream_audio`],
//!   [`StreamEvent`] and the results they carry, [`ClientError`].
//! - [`resume`]: what is retried and when, the audio kept for a resume, the seam between
//!   calls (pure; the driver is [`stream_audio`]).
//! - [`latency`]: client-side latency measures over a traced stream (word emission,
//!   interim, finalisation; percentiles), shared by the benchmark and the soak tool.
#![warn(missing_docs)]

pub mod latency;
pub mod resume;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use transcribe_core::audio::{samples_to_seconds, seconds_to_samples};
use transcribe_core::{SAMPLE_RATE, Word};
use transcribe_proto::v1::streaming_recognize_request::StreamingRequest;
use transcribe_proto::v1::transcription_service_client::TranscriptionServiceClient;
use transcribe_proto::v1::{
    AudioEncoding, AudioFormat, RecognitionConfig, StreamingRecognitionConfig,
    StreamingRecognizeRequest, StreamingRecognizeResponse,
};

use transcribe_proto::auth::{AUTHORIZATION, BEARER, TokenFileError, read_token_file};
use transcribe_proto::duration::to_std as std_duration;

pub use resume::RetryPolicy;
pub use resume::Verdict;
use resume::{Backoff, Seam, Tape};

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
    /// Resume the stream when the server or the path to it fails (see the crate doc);
    /// `None` returns the first failure.
    pub retry: Option<RetryPolicy>,
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
            retry: None,
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
    /// The call failed and the stream will resume on a new one (only with
    /// [`StreamOptions::retry`]). Interims shown so far are void: their utterance comes
    /// again.
    Resuming {
        /// Why the call ended.
        error: String,
        /// The wait before the new call.
        after: Duration,
        /// Where the new call's audio starts, seconds from the stream start (everything
        /// before is final).
        from: f64,
    },
    /// The first answer on a resumed call: results flow again.
    Resumed {
        /// From the failure of the previous call to this answer (backoff, reconnecting,
        /// the server working through the audio sent again).
        gap: Duration,
    },
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
    /// Wall time of the whole stream.
    pub elapsed: Duration,
    /// Calls made (1 unless the stream resumed).
    pub attempts: u32,
    /// For each resume: from the failure to the new call's first answer.
    pub resume_gaps: Vec<Duration>,
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
    /// The stream kept failing for longer than [`RetryPolicy::give_up_after`] (the last
    /// failure is the source). Check the server (or balancer) and its health.
    #[error("gave up after {:.1} s and {attempts} calls", after.as_secs_f64())]
    GaveUp {
        /// How long the failures lasted.
        after: Duration,
        /// Calls made in all.
        attempts: u32,
        /// The last failure.
        #[source]
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// Whether a call that failed with this error is worth making again
    /// ([`resume::verdict`] for statuses). `reached`: a server answered this stream (or
    /// subscription) before. A server never reached is a wrong address or a stopped server,
    /// said at once; once one was reached, a refused connection is a replica restarting (or
    /// a balancer's address moving) and is retried.
    pub fn verdict(&self, reached: bool) -> Verdict {
        match self {
            Self::Status(status) => resume::verdict(status),
            Self::Connect { .. } if reached => Verdict::Retry { hint: None },
            _ => Verdict::Fail,
        }
    }
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
/// Paced in real time with `options.realtime`; resumed on failures with `options.retry`.
///
/// # Errors
/// [`ClientError`] when the server cannot be reached or ends the call with an error
/// ([`ClientError::GaveUp`] when retrying ran out of time).
pub async fn stream_samples(
    target: impl Into<Target>,
    samples: &[f32],
    options: &StreamOptions,
    on_event: impl FnMut(StreamEvent),
) -> Result<StreamSummary, ClientError> {
    let (feed, feeder) = feed_samples(samples, options);
    let result = stream_audio(target, feed, options, on_event).await;
    feeder.abort();
    result
}

/// Streams live audio (16 kHz mono chunks from `feed`, e.g. a microphone) to the server at
/// `target`; the stream ends (the server sends its last finals) when every sender of the
/// feed is dropped. Resumed on failures with `options.retry` (the audio not yet covered by
/// a final is kept meanwhile).
///
/// # Errors
/// As [`stream_samples`].
pub async fn stream_audio(
    target: impl Into<Target>,
    feed: mpsc::Receiver<Vec<f32>>,
    options: &StreamOptions,
    on_event: impl FnMut(StreamEvent),
) -> Result<StreamSummary, ClientError> {
    drive(Calls::Connect(target.into()), feed, options, on_event).await
}

/// [`stream_samples`] on an existing client (its calls reuse the client's channel).
///
/// # Errors
/// As [`stream_samples`].
pub async fn stream_with(
    client: &mut ServiceClient,
    samples: &[f32],
    options: &StreamOptions,
    on_event: impl FnMut(StreamEvent),
) -> Result<StreamSummary, ClientError> {
    let (feed, feeder) = feed_samples(samples, options);
    let result = drive(Calls::Reuse(client.clone()), feed, options, on_event).await;
    feeder.abort();
    result
}

/// A task that sends `samples` in chunks of `options.chunk`, paced in real time when
/// `options.realtime`, then closes the feed.
fn feed_samples(
    samples: &[f32],
    options: &StreamOptions,
) -> (mpsc::Receiver<Vec<f32>>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
    let audio = samples.to_vec();
    let realtime = options.realtime;
    let chunk = options.chunk;
    let chunk_samples = chunk_samples(chunk);
    let feeder = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(chunk);
        for piece in audio.chunks(chunk_samples) {
            if realtime {
                ticker.tick().await;
            }
            if tx.send(piece.to_vec()).await.is_err() {
                return;
            }
        }
    });
    (rx, feeder)
}

fn chunk_samples(chunk: Duration) -> usize {
    ((chunk.as_secs_f64() * f64::from(SAMPLE_RATE)) as usize).max(1)
}

fn samples_of(offset: Option<&prost_types::Duration>) -> u64 {
    seconds_to_samples(seconds(offset)) as u64
}

/// Where each call of a stream goes.
enum Calls {
    /// A new connection per call (a balancer may send it elsewhere).
    Connect(Target),
    /// Calls on this client's channel.
    Reuse(ServiceClient),
}

impl Calls {
    async fn client(&self) -> Result<ServiceClient, ClientError> {
        match self {
            Self::Connect(target) => connect(target).await,
            Self::Reuse(client) => Ok(client.clone()),
        }
    }
}

/// Runs a stream over as many calls as it takes: each call gets a client from `calls`,
/// sends the kept audio from the resume point and reports what comes back; a failure is
/// retried per `options.retry` (see [`resume`]).
async fn drive(
    calls: Calls,
    mut feed: mpsc::Receiver<Vec<f32>>,
    options: &StreamOptions,
    mut on_event: impl FnMut(StreamEvent),
) -> Result<StreamSummary, ClientError> {
    let started = Instant::now();
    let tape = Arc::new(watch::Sender::new(Tape::default()));
    let keeper = tokio::spawn({
        let tape = Arc::clone(&tape);
        async move {
            while let Some(chunk) = feed.recv().await {
                tape.send_modify(|t| t.push(&chunk));
            }
            tape.send_modify(Tape::end);
        }
    });
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut backoff = Backoff::new(options.retry.unwrap_or_default(), seed);
    let mut seam = Seam::default();
    let mut summary = StreamSummary::default();
    // When the previous call failed (to time the resume).
    let mut failed_at: Option<Instant> = None;
    let result = loop {
        let from = seam.begin_attempt();
        let call_started = Instant::now();
        let mut answered: Option<Instant> = None;
        let resuming = failed_at;
        let outcome = match calls.client().await {
            Ok(mut client) => {
                one_call(
                    &mut client,
                    &tape,
                    from,
                    options,
                    &mut seam,
                    &mut summary,
                    &mut answered,
                    resuming,
                    &mut on_event,
                )
                .await
            }
            Err(error) => Err(error),
        };
        let Err(error) = outcome else {
            break Ok(());
        };
        if answered.is_some() {
            failed_at = None;
        }
        failed_at.get_or_insert_with(Instant::now);
        if options.retry.is_none() {
            break Err(error);
        }
        // Only a first call's connection can fail with no server reached before.
        let mut verdict = error.verdict(seam.attempts() > 1);
        // A call that reached the length limit without moving the resume point (no final,
        // no newer final_offset: e.g. silence sent faster than the server reports) would be
        // made again just as it was, at once and forever: count it as a failure instead, so
        // that the backoff and `give_up_after` bound it.
        let stalled = verdict == Verdict::Continue && seam.resume_point() <= from;
        if stalled {
            verdict = Verdict::Retry { hint: None };
        }
        if answered.is_some() && !stalled {
            backoff.succeeded();
        }
        let spent = answered.unwrap_or(call_started).elapsed();
        let wait = match verdict {
            Verdict::Fail => break Err(error),
            Verdict::Continue => Duration::ZERO,
            Verdict::Retry { hint } => match backoff.failed(spent, hint) {
                Some(wait) => wait,
                None => {
                    break Err(ClientError::GaveUp {
                        after: backoff.failing_for(),
                        attempts: seam.attempts(),
                        last: Box::new(error),
                    });
                }
            },
        };
        let from = samples_to_seconds(seam.resume_point() as usize);
        tracing::info!(
            message = "Stream interrupted; resuming.",
            error = %error,
            wait_seconds = wait.as_secs_f64(),
            from_seconds = from
        );
        on_event(StreamEvent::Resuming {
            error: error.to_string(),
            after: wait,
            from,
        });
        tokio::time::sleep(wait).await;
    };
    keeper.abort();
    summary.attempts = seam.attempts();
    summary.elapsed = started.elapsed();
    result.map(|()| summary)
}

/// One call: the config (with `stream_start_offset` = `from`), then the tape's audio from
/// `from` on as it comes, half-closed at its end; responses reported through `seam` (new
/// indices, repeats dropped). `answered` is set at each response; `resuming` is when the
/// previous call failed, reported with the first response.
#[allow(clippy::too_many_arguments)]
async fn one_call(
    client: &mut ServiceClient,
    tape: &Arc<watch::Sender<Tape>>,
    from: u64,
    options: &StreamOptions,
    seam: &mut Seam,
    summary: &mut StreamSummary,
    answered: &mut Option<Instant>,
    mut resuming: Option<Instant>,
    on_event: &mut impl FnMut(StreamEvent),
) -> Result<(), ClientError> {
    let mut config = streaming_config(options);
    if let Some(StreamingRequest::StreamingConfig(c)) = config.streaming_request.as_mut() {
        c.stream_start_offset = (from > 0).then(|| {
            transcribe_proto::duration::to_proto(Duration::from_nanos(
                from * 1_000_000_000 / u64::from(SAMPLE_RATE),
            ))
        });
    }
    let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
    let sender = tokio::spawn(send_tape(
        tape.subscribe(),
        from,
        chunk_samples(options.chunk),
        config,
        tx,
    ));
    let result = async {
        let mut inbound = client
            .streaming_recognize(ReceiverStream::new(rx))
            .await?
            .into_inner();
        while let Some(response) = inbound.message().await? {
            *answered = Some(Instant::now());
            if let Some(failed) = resuming.take() {
                let gap = failed.elapsed();
                summary.resume_gaps.push(gap);
                on_event(StreamEvent::Resumed { gap });
            }
            summary.responses += 1;
            if summary.request_id.is_empty() {
                summary.request_id.clone_from(&response.request_id);
            }
            if let Some(progress) = &response.progress {
                seam.on_final_offset(samples_of(progress.final_offset.as_ref()));
            }
            for event in events_of(&response) {
                let event = match event {
                    StreamEvent::Final(mut f) => {
                        let end = seconds_to_samples(f.end) as u64;
                        let Some(index) = seam.on_final(f.utterance_index, end) else {
                            continue;
                        };
                        f.utterance_index = index;
                        summary.finals.push(f.clone());
                        StreamEvent::Final(f)
                    }
                    StreamEvent::Interim {
                        utterance_index,
                        stable,
                        unstable,
                    } => StreamEvent::Interim {
                        utterance_index: seam.map_index(utterance_index),
                        stable,
                        unstable,
                    },
                    other => other,
                };
                on_event(event);
            }
            // Audio before the resume point will never be sent again.
            let point = seam.resume_point();
            tape.send_modify(|t| t.forget_before(point));
        }
        Ok::<(), ClientError>(())
    }
    .await;
    sender.abort();
    result
}

/// Sends `config`, then the tape's audio from `cursor` in chunks of at most `chunk` as it
/// arrives, and drops `tx` (half-closing the call) once the tape has ended and all is sent.
async fn send_tape(
    mut tape: watch::Receiver<Tape>,
    mut cursor: u64,
    chunk: usize,
    config: StreamingRecognizeRequest,
    tx: mpsc::Sender<StreamingRecognizeRequest>,
) {
    if tx.send(config).await.is_err() {
        return;
    }
    loop {
        let (piece, done) = {
            let tape = tape.borrow_and_update();
            let piece = tape.read(cursor, chunk);
            let done = piece.is_empty() && tape.is_ended() && cursor >= tape.end_position();
            (piece, done)
        };
        if done {
            return;
        }
        if piece.is_empty() {
            if tape.changed().await.is_err() {
                return;
            }
            continue;
        }
        cursor += piece.len() as u64;
        let bytes: Vec<u8> = piece.iter().flat_map(|s| s.to_le_bytes()).collect();
        let request = StreamingRecognizeRequest {
            streaming_request: Some(StreamingRequest::AudioContent(bytes)),
        };
        if tx.send(request).await.is_err() {
            return;
        }
    }
}

/// Spawns the task that sends [`streaming_config`] for `options`, then `samples` (16 kHz
/// mono) as FLOAT32 chunks of `options.chunk`, paced in real time when `options.realtime`,
/// and half-closes. Returns the task and the request stream to pass to
/// `streaming_recognize`; dropping the stream (or aborting the task) stops the sending.
/// (One call, no resume: for callers that drive the call themselves.)
pub fn paced_requests(
    samples: &[f32],
    options: &StreamOptions,
) -> (
    tokio::task::JoinHandle<()>,
    ReceiverStream<StreamingRecognizeRequest>,
) {
    let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
    let chunk_samples = chunk_samples(options.chunk);
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
