//! A Rust client for the streaming API: [`stream_samples`] sends 16 kHz mono audio to a
//! server (paced like a live source or as fast as the server takes it) and reports interim
//! and final results as [`StreamEvent`]s. `transcribe --server URL FILE` and the end-to-end
//! tests use it.
//!
//! # Example
//! ```no_run
//! use transcribe_server::client::{StreamEvent, StreamOptions, stream_samples};
//! # async fn demo(samples: Vec<f32>) -> Result<(), transcribe_server::client::ClientError> {
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

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use transcribe_core::{SAMPLE_RATE, Word};
use transcribe_proto::v1::streaming_recognize_request::StreamingRequest;
use transcribe_proto::v1::transcription_service_client::TranscriptionServiceClient;
use transcribe_proto::v1::{
    AudioEncoding, AudioFormat, RecognitionConfig, StreamingRecognitionConfig,
    StreamingRecognizeRequest, StreamingRecognizeResponse,
};

use crate::convert::std_duration;

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

/// Connects to `url` (`http://host:port`).
///
/// # Errors
/// [`ClientError::InvalidUrl`] or [`ClientError::Connect`].
pub async fn connect(url: &str) -> Result<TranscriptionServiceClient<Channel>, ClientError> {
    let endpoint = Channel::from_shared(url.to_owned()).map_err(|e| ClientError::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            url: url.to_owned(),
            source,
        })?;
    Ok(TranscriptionServiceClient::new(channel))
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

/// Streams `samples` (16 kHz mono, `[-1, 1]`) to the server at `url` and calls `on_event`
/// for every result as it arrives; returns when the server has sent its last final.
///
/// # Errors
/// [`ClientError`] when the server cannot be reached or ends the call with an error.
pub async fn stream_samples(
    url: &str,
    samples: &[f32],
    options: &StreamOptions,
    on_event: impl FnMut(StreamEvent),
) -> Result<StreamSummary, ClientError> {
    let mut client = connect(url).await?;
    stream_with(&mut client, samples, options, on_event).await
}

/// [`stream_samples`] on an existing client.
///
/// # Errors
/// [`ClientError::Status`] when the server ends the call with an error.
pub async fn stream_with(
    client: &mut TranscriptionServiceClient<Channel>,
    samples: &[f32],
    options: &StreamOptions,
    mut on_event: impl FnMut(StreamEvent),
) -> Result<StreamSummary, ClientError> {
    let started = Instant::now();
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
    let response = client.streaming_recognize(ReceiverStream::new(rx)).await;
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
