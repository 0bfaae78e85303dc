//! Latency of the two streaming doors side by side: the same fixtures streamed to one running
//! server over gRPC (StreamingRecognize) and over WebSocket (`/v1/stream`), paced in real
//! time, alternating the order run by run (the machine is noisy: compare medians).
//!
//! ```text
//! target/release/transcribe-server --listen 127.0.0.1:50051 --model tiny.en &
//! cargo run --release -p transcribe-tests --example door_latency -- \
//!     --server http://127.0.0.1:50051 [--runs 5] [--files a.wav,b.wav]
//! ```
//!
//! Both doors send the same audio: 16 kHz mono LINEAR16 in 100 ms chunks, every chunk at
//! its real-time moment, interim results on. Measured per door:
//! - **final latency**: for each final, its arrival minus the moment the audio up to its
//!   `result_end_offset` had been sent (stream start + that offset);
//! - **interim latency**: the same for every interim result that carries text.
//!
//! Prints the medians and p95s per door and the ratio WebSocket / gRPC of the medians.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::Message;
use transcribe_client::latency::percentile;
use transcribe_proto::v1::streaming_recognize_request::StreamingRequest;
use transcribe_proto::v1::transcription_service_client::TranscriptionServiceClient;
use transcribe_proto::v1::{
    AudioEncoding, AudioFormat, RecognitionConfig, StreamingRecognitionConfig,
    StreamingRecognizeRequest, StreamingRecognizeResponse,
};
use transcribe_tests::{TestResult, linear16, read_fixture};

/// Audio per message.
const CHUNK: Duration = Duration::from_millis(100);
const CHUNK_SAMPLES: usize = 1_600;

fn config() -> StreamingRecognitionConfig {
    StreamingRecognitionConfig {
        config: Some(RecognitionConfig {
            audio_format: Some(AudioFormat {
                encoding: AudioEncoding::Linear16.into(),
                sample_rate_hertz: 16_000,
                audio_channel_count: 1,
            }),
            ..Default::default()
        }),
        interim_results: true,
        ..Default::default()
    }
}

/// Latencies of one stream, in seconds.
#[derive(Default)]
struct Latencies {
    finals: Vec<f64>,
    interims: Vec<f64>,
}

impl Latencies {
    /// Records the results of `response`, which arrived at `at` on a stream that started
    /// sending at `start`.
    fn record(&mut self, response: &StreamingRecognizeResponse, start: Instant, at: Instant) {
        for result in &response.results {
            let has_text = result
                .alternatives
                .first()
                .is_some_and(|a| !a.transcript.trim().is_empty());
            let Some(end) = result
                .result_end_offset
                .as_ref()
                .and_then(transcribe_proto::duration::to_std)
            else {
                continue;
            };
            let latency = at.duration_since(start).as_secs_f64() - end.as_secs_f64();
            if result.is_final {
                self.finals.push(latency);
            } else if has_text {
                self.interims.push(latency);
            }
        }
    }
}

async fn over_grpc(server: &str, samples: &[f32]) -> TestResult<Latencies> {
    let mut client = TranscriptionServiceClient::connect(server.to_owned()).await?;
    let (tx, rx) = mpsc::channel(64);
    tx.send(StreamingRecognizeRequest {
        streaming_request: Some(StreamingRequest::StreamingConfig(config())),
    })
    .await?;
    let mut responses = client
        .streaming_recognize(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let start = Instant::now();
    let audio = samples.to_vec();
    let sender = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(CHUNK);
        for chunk in audio.chunks(CHUNK_SAMPLES) {
            ticker.tick().await;
            let request = StreamingRecognizeRequest {
                streaming_request: Some(StreamingRequest::AudioContent(linear16(chunk))),
            };
            if tx.send(request).await.is_err() {
                return;
            }
        }
    });
    let mut latencies = Latencies::default();
    while let Some(response) = responses.message().await? {
        latencies.record(&response, start, Instant::now());
    }
    sender.await?;
    Ok(latencies)
}

async fn over_websocket(server: &str, samples: &[f32]) -> TestResult<Latencies> {
    let url = format!("{}/v1/stream", server.replacen("http://", "ws://", 1));
    let (socket, _) = tokio_tungstenite::connect_async(url).await?;
    let (mut sink, mut stream) = socket.split();
    sink.send(Message::text(transcribe_proto::json::to_json(&config())?))
        .await?;
    let start = Instant::now();
    let audio = samples.to_vec();
    let sender = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(CHUNK);
        for chunk in audio.chunks(CHUNK_SAMPLES) {
            ticker.tick().await;
            if sink.send(Message::binary(linear16(chunk))).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::text(r#"{"type": "end"}"#)).await;
    });
    let mut latencies = Latencies::default();
    while let Some(message) = stream.next().await {
        match message? {
            Message::Text(text) => {
                let at = Instant::now();
                let response: StreamingRecognizeResponse =
                    transcribe_proto::json::from_json(&text)?;
                latencies.record(&response, start, at);
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    sender.await?;
    Ok(latencies)
}

fn summary(values: &[f64]) -> String {
    match (percentile(values, 50.0), percentile(values, 95.0)) {
        (Some(p50), Some(p95)) => format!("{p50:.3} / {p95:.3}"),
        _ => "-".into(),
    }
}

#[tokio::main]
async fn main() -> TestResult {
    let mut server = "http://127.0.0.1:50051".to_owned();
    let mut runs = 5usize;
    let mut files = vec![
        "speech/pauses.wav".to_owned(),
        "speech/meeting.wav".to_owned(),
    ];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--server" => server = value,
            "--runs" => runs = value.parse()?,
            "--files" => files = value.split(',').map(str::to_owned).collect(),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let mut grpc = Latencies::default();
    let mut ws = Latencies::default();
    for run in 0..runs {
        for file in &files {
            // A path relative to audio-fixtures/, or an absolute one.
            let (samples, _) = read_fixture(file)?;
            // Alternate which door goes first, so drift in the machine's load hits both.
            for door in if run % 2 == 0 { [0, 1] } else { [1, 0] } {
                let got = if door == 0 {
                    over_grpc(&server, &samples).await?
                } else {
                    over_websocket(&server, &samples).await?
                };
                let into = if door == 0 { &mut grpc } else { &mut ws };
                into.finals.extend(got.finals);
                into.interims.extend(got.interims);
            }
        }
        eprintln!("run {}/{runs} done", run + 1);
    }
    let median = |v: &[f64]| percentile(v, 50.0).unwrap_or(f64::NAN);
    println!(
        "| door | finals | final latency p50 / p95 (s) | interims | interim latency p50 / p95 (s) |"
    );
    println!("|---|---|---|---|---|");
    for (name, l) in [("gRPC", &grpc), ("WebSocket", &ws)] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            l.finals.len(),
            summary(&l.finals),
            l.interims.len(),
            summary(&l.interims)
        );
    }
    println!(
        "\nratio WebSocket / gRPC of the medians: finals {:.2}, interims {:.2}",
        median(&ws.finals) / median(&grpc.finals),
        median(&ws.interims) / median(&grpc.interims)
    );
    Ok(())
}
