//! One soak stream (a file paced in real time, completed or dropped by the client) and one
//! bad request, each reduced to a record of what the server said.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic::transport::Channel;
use transcribe_client::latency::{self, Trace};
use transcribe_client::{self as client, StreamEvent, StreamOptions};
use transcribe_core::SAMPLE_RATE;
use transcribe_proto::duration::to_std as std_duration;
use transcribe_proto::v1::streaming_recognize_request::StreamingRequest;
use transcribe_proto::v1::transcription_service_client::TranscriptionServiceClient;
use transcribe_proto::v1::{AudioEncoding, StreamingRecognizeRequest, StreamingRecognizeResponse};

use crate::accounting::{self, Reported, Verdict};
use crate::plan::{BadKind, Fate, Rng};

/// How a stream ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The server ended it with OK after the client half-closed.
    Completed,
    /// The client went away as planned.
    Dropped,
    /// The server ended it with an error status (or the call failed).
    Failed {
        /// The status code.
        code: Code,
        /// Its message.
        message: String,
    },
    /// No connection could be made.
    ConnectFailed(String),
}

/// What one stream did and saw.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    /// Stream slot (0..N).
    pub slot: usize,
    /// File name.
    pub file: String,
    /// The planned fate.
    pub fate: Fate,
    /// Its audio length.
    pub length: Duration,
    /// How it ended.
    pub outcome: Outcome,
    /// What the server reported.
    pub reported: Reported,
    /// For completed streams: the audio accounting.
    pub verdict: Option<Verdict>,
    /// Responses received.
    pub responses: usize,
    /// Finals with text / without.
    pub finals: usize,
    /// Finals with empty text.
    pub empty_finals: usize,
    /// Word emission latencies (seconds; completed streams, each word of its finals timed
    /// at its first appearance) and words never matched.
    pub word_latencies: Vec<f64>,
    /// Words of the finals never seen in time order.
    pub unmatched_words: usize,
    /// Interim latencies (arrival minus the interim's audio end).
    pub interim_latencies: Vec<f64>,
    /// Finalisation latencies (arrival minus the final's audio end).
    pub final_latencies: Vec<f64>,
    /// Finalisation latencies from the final's last word's end.
    pub final_word_latencies: Vec<f64>,
    /// Server-reported `processing_latency` values.
    pub server_latencies: Vec<f64>,
}

/// A client on a new connection to `url` (plain HTTP/2: the soak targets loopback only
/// and starts its server without TLS or a token).
///
/// # Errors
/// When the URL is invalid or nothing answers.
pub async fn connect(url: &str) -> Result<TranscriptionServiceClient<Channel>, String> {
    let endpoint = Channel::from_shared(url.to_owned()).map_err(|e| e.to_string())?;
    let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
    Ok(TranscriptionServiceClient::new(channel))
}

impl StreamRecord {
    /// A record with nothing seen yet.
    pub fn new(slot: usize, file: &str, fate: Fate, length: Duration, outcome: Outcome) -> Self {
        Self {
            slot,
            file: file.to_owned(),
            fate,
            length,
            outcome,
            reported: Reported::default(),
            verdict: None,
            responses: 0,
            finals: 0,
            empty_finals: 0,
            word_latencies: Vec::new(),
            unmatched_words: 0,
            interim_latencies: Vec::new(),
            final_latencies: Vec::new(),
            final_word_latencies: Vec::new(),
            server_latencies: Vec::new(),
        }
    }
}

fn samples_of(d: Option<&prost_types::Duration>) -> u64 {
    d.and_then(std_duration).map_or(0, |d| {
        (d.as_secs_f64() * f64::from(SAMPLE_RATE)).round() as u64
    })
}

/// What arrives, collected as it arrives.
#[derive(Default)]
struct Collect {
    events: Vec<(Instant, StreamEvent)>,
    interim_ends: Vec<f64>,
    reported: Reported,
    server_latencies: Vec<f64>,
    responses: usize,
}

impl Collect {
    fn on_response(&mut self, at: Instant, response: &StreamingRecognizeResponse) {
        self.responses += 1;
        if let Some(p) = &response.progress {
            let r = &mut self.reported;
            r.received = r.received.max(samples_of(p.audio_received.as_ref()));
            r.processed = r.processed.max(samples_of(p.audio_processed.as_ref()));
            r.final_offset = r.final_offset.max(samples_of(p.final_offset.as_ref()));
            if let Some(l) = p.processing_latency.as_ref().and_then(std_duration) {
                self.server_latencies.push(l.as_secs_f64());
            }
        }
        let interim_end = response
            .results
            .iter()
            .find(|r| !r.is_final)
            .map(|r| samples_of(r.result_end_offset.as_ref()) as f64 / f64::from(SAMPLE_RATE));
        for event in client::events_of(response) {
            if matches!(event, StreamEvent::Interim { .. }) {
                self.interim_ends.push(interim_end.unwrap_or(f64::NAN));
            }
            self.events.push((at, event));
        }
    }
}

/// Streams `samples` (16 kHz mono, paced per `options`) on `grpc` and ends it per `fate`.
pub async fn run_stream(
    grpc: &mut TranscriptionServiceClient<Channel>,
    slot: usize,
    file: &str,
    samples: &Arc<Vec<f32>>,
    options: &StreamOptions,
    fate: Fate,
) -> StreamRecord {
    let length = Duration::from_secs_f64(samples.len() as f64 / f64::from(SAMPLE_RATE));
    let start = Instant::now();
    let (sender, requests) = client::paced_requests(samples, options);
    let mut got = Collect::default();
    let drive = async {
        let mut inbound = grpc.streaming_recognize(requests).await?.into_inner();
        while let Some(response) = inbound.message().await? {
            got.on_response(Instant::now(), &response);
        }
        Ok::<(), tonic::Status>(())
    };
    let result = match fate.drop_after(length) {
        Some(after) => tokio::time::timeout(after, drive).await.ok(),
        None => Some(drive.await),
    };
    sender.abort();
    let outcome = match result {
        None => Outcome::Dropped,
        Some(Ok(())) => Outcome::Completed,
        Some(Err(status)) => Outcome::Failed {
            code: status.code(),
            message: status.message().to_owned(),
        },
    };
    let trace = Trace {
        start,
        events: got.events,
    };
    let mut record = StreamRecord::new(slot, file, fate, length, outcome);
    record.reported = got.reported;
    record.responses = got.responses;
    record.server_latencies = got.server_latencies;
    for (_, e) in &trace.events {
        if let StreamEvent::Final(f) = e {
            if f.text.is_empty() {
                record.empty_finals += 1;
            } else {
                record.finals += 1;
            }
        }
    }
    if record.outcome == Outcome::Completed {
        record.verdict = Some(accounting::lost_samples(samples, record.reported));
        let reference = trace.final_words();
        for l in latency::word_latencies(&reference, &trace) {
            match l {
                Some(l) => record.word_latencies.push(l),
                None => record.unmatched_words += 1,
            }
        }
        record.interim_latencies = latency::interim_latencies(&trace, &got.interim_ends)
            .into_iter()
            .filter(|l| l.is_finite())
            .collect();
        for (f, w) in latency::final_latencies(&trace) {
            record.final_latencies.push(f);
            record.final_word_latencies.extend(w);
        }
    }
    record
}

/// Bytes in 100 ms of 16 kHz LINEAR16 mono: the audio chunk bad requests carry.
const CHUNK_BYTES: usize = 3_200;

/// Sample rates outside the accepted 8-48 kHz (ingest's MIN/MAX_SAMPLE_RATE).
const BAD_RATES: [i32; 4] = [4_000, 7_999, 48_001, 96_000];

/// The requests of a bad request of `kind`.
pub fn bad_requests(kind: BadKind, rng: &mut Rng) -> Vec<StreamingRecognizeRequest> {
    let audio = |bytes: usize| StreamingRecognizeRequest {
        streaming_request: Some(StreamingRequest::AudioContent(vec![0; bytes])),
    };
    let config = |encoding: i32, rate: i32| {
        let mut request = client::streaming_config(&StreamOptions::default());
        if let Some(StreamingRequest::StreamingConfig(c)) = request.streaming_request.as_mut()
            && let Some(format) = c.config.as_mut().and_then(|r| r.audio_format.as_mut())
        {
            format.encoding = encoding;
            format.sample_rate_hertz = rate;
        }
        request
    };
    let linear16 = AudioEncoding::Linear16 as i32;
    match kind {
        BadKind::WrongSampleRate => vec![
            config(linear16, BAD_RATES[rng.below(BAD_RATES.len())]),
            audio(CHUNK_BYTES),
        ],
        BadKind::OddByteCount => {
            // An odd count: never a whole number of 2-byte samples.
            let odd = 2 * (1 + rng.below(CHUNK_BYTES)) - 1;
            vec![config(linear16, 16_000), audio(CHUNK_BYTES), audio(odd)]
        }
        BadKind::MissingConfig => vec![audio(CHUNK_BYTES), audio(CHUNK_BYTES)],
        BadKind::Garbage => {
            if rng.unit() < 0.5 {
                vec![StreamingRecognizeRequest {
                    streaming_request: None,
                }]
            } else {
                // Encoding values the API does not define.
                let unknown = 1_000 + rng.below(1_000) as i32;
                vec![config(unknown, 16_000), audio(CHUNK_BYTES)]
            }
        }
    }
}

/// Sends a bad request of `kind` on `grpc`; returns the status code the call ended with
/// (`Code::Ok` when the server accepted it).
pub async fn run_bad(
    grpc: &mut TranscriptionServiceClient<Channel>,
    kind: BadKind,
    rng: &mut Rng,
) -> Code {
    let requests = tokio_stream::iter(bad_requests(kind, rng));
    let mut inbound = match grpc.streaming_recognize(requests).await {
        Ok(r) => r.into_inner(),
        Err(status) => return status.code(),
    };
    loop {
        match inbound.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return Code::Ok,
            Err(status) => return status.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_requests_are_bad_in_the_intended_way() {
        let mut rng = Rng::new(5);
        for _ in 0..50 {
            let odd = bad_requests(BadKind::OddByteCount, &mut rng);
            match odd.last().and_then(|r| r.streaming_request.as_ref()) {
                Some(StreamingRequest::AudioContent(bytes)) => assert_eq!(bytes.len() % 2, 1),
                other => panic!("expected audio, got {other:?}"),
            }
            let rate = bad_requests(BadKind::WrongSampleRate, &mut rng);
            match rate.first().and_then(|r| r.streaming_request.as_ref()) {
                Some(StreamingRequest::StreamingConfig(c)) => {
                    let hz = c
                        .config
                        .as_ref()
                        .and_then(|r| r.audio_format.as_ref())
                        .map_or(16_000, |f| f.sample_rate_hertz);
                    assert!(!(8_000..=48_000).contains(&hz), "{hz}");
                }
                other => panic!("expected a config, got {other:?}"),
            }
            let missing = bad_requests(BadKind::MissingConfig, &mut rng);
            assert!(matches!(
                missing.first().and_then(|r| r.streaming_request.as_ref()),
                Some(StreamingRequest::AudioContent(_))
            ));
            assert!(!bad_requests(BadKind::Garbage, &mut rng).is_empty());
        }
    }
}
