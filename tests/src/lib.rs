//! End-to-end test helpers: start a real server on `127.0.0.1:0` with a shutdown oneshot,
//! fake or real engines, fixtures, and raw gRPC streams.
//!
//! # Layout
//! - [`TestServer`]: a server task on an ephemeral port, stopped by a oneshot.
//! - [`fake_loader`], [`gated_loader`]: model loaders backed by the scripted fake engine.
//! - [`whisper_loader`]: the real `tiny.en` (or `None` when it cannot be resolved).
//! - [`fixture`], [`read_fixture`]: files under `audio-fixtures/`.
//! - [`raw_stream`]: send a scripted list of requests and collect responses and the status.
//! - [`faults_loader`], [`held_loader`]: fakes that fail or panic on chosen calls, or hold
//!   every decode until a [`Hold`] is released (for queue and fault-isolation tests).
//! - [`ServerProcess`]: the `transcribe-server` binary as a child process (signals, exit).
#![warn(missing_docs)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use transcribe_core::fake::{Script, ScriptedTranscriber};
use transcribe_proto::v1::streaming_recognize_request::StreamingRequest;
use transcribe_proto::v1::transcription_service_client::TranscriptionServiceClient;
use transcribe_proto::v1::{
    AudioEncoding, AudioFormat, RecognitionConfig, RecognizeRequest, RecognizeResponse,
    StreamingRecognitionConfig, StreamingRecognizeRequest, StreamingRecognizeResponse,
};
use transcribe_server::models::{LoadFn, ModelInfo};
use transcribe_server::pool::{Decoder, DecoderFactory, Uninterruptible};
use transcribe_server::{
    FnLoader, LoadedModel, ModelLoader, ServerConfig, ServerError, ServerHandle,
};

/// A boxed error for tests.
pub type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// A file under `audio-fixtures/`.
pub fn fixture(relative: &str) -> PathBuf {
    workspace_root().join("audio-fixtures").join(relative)
}

/// A fixture decoded to 16 kHz mono, and its reference text (`.txt` beside it, if any).
///
/// # Errors
/// When the file cannot be decoded.
pub fn read_fixture(relative: &str) -> TestResult<(Vec<f32>, String)> {
    let path = fixture(relative);
    let audio = transcribe_audio::decode_file(&path)?;
    let reference = std::fs::read_to_string(path.with_extension("txt")).unwrap_or_default();
    Ok((audio.samples, reference.trim().to_owned()))
}

/// A running server.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The server's state.
    pub handle: ServerHandle,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
}

impl TestServer {
    /// Starts a server with `config` (its listen address is ignored) serving `loader`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(config: ServerConfig, loader: Box<dyn ModelLoader>) -> TestResult<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = transcribe_server::Server::new(config, loader);
        let handle = server.handle();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = rx.await;
        }));
        Ok(Self {
            url,
            handle,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    /// Starts a server and waits until its models are loaded.
    ///
    /// # Errors
    /// When the port cannot be bound or loading takes over a minute.
    pub async fn start_ready(
        config: ServerConfig,
        loader: Box<dyn ModelLoader>,
    ) -> TestResult<Self> {
        let server = Self::start(config, loader).await?;
        server
            .wait_until(Duration::from_secs(60), |h| h.is_serving())
            .await?;
        Ok(server)
    }

    /// Polls `check` every 10 ms until it holds.
    ///
    /// # Errors
    /// When `timeout` passes first.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        check: impl Fn(&ServerHandle) -> bool,
    ) -> TestResult {
        let deadline = tokio::time::Instant::now() + timeout;
        while !check(&self.handle) {
            if tokio::time::Instant::now() > deadline {
                return Err("condition not reached in time".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// A client connected to the server.
    ///
    /// # Errors
    /// When it cannot connect.
    pub async fn client(&self) -> TestResult<TranscriptionServiceClient<Channel>> {
        Ok(TranscriptionServiceClient::connect(self.url.clone()).await?)
    }

    /// A raw channel to the server (for health and reflection clients).
    ///
    /// # Errors
    /// When it cannot connect.
    pub async fn channel(&self) -> TestResult<Channel> {
        Ok(Channel::from_shared(self.url.clone())?.connect().await?)
    }

    /// Triggers shutdown without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts down and waits for the server to stop.
    ///
    /// # Errors
    /// The server's own error, or a panic of its task.
    pub async fn stop(mut self) -> TestResult {
        self.trigger_shutdown();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.trigger_shutdown();
    }
}

/// Name the fake model is served under.
pub const FAKE_MODEL: &str = "fake.en";

/// The standard fake script: two phrases with a pause between them (6 s of audio).
///
/// # Errors
/// Never for these constants.
pub fn two_phrases() -> TestResult<(Script, Vec<f32>)> {
    phrases(
        &[
            (0.5, "hello there general kenobi"),
            (3.5, "you are a bold one"),
        ],
        6.5,
    )
}

/// A fake script of `(start seconds, text)` phrases (0.3 s words, 0.1 s apart) and
/// `seconds` of its audio.
///
/// # Errors
/// When the phrases overlap or a time is negative.
pub fn phrases(phrases: &[(f64, &str)], seconds: f64) -> TestResult<(Script, Vec<f32>)> {
    let script = Script::from_phrases(phrases, 0.3, 0.1)?;
    let audio = script.render(seconds);
    Ok((script, audio))
}

/// The `ErrorInfo.reason` of a status, if any.
pub fn error_reason(status: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
}

/// A loader serving [`FAKE_MODEL`] with scripted fakes that hear `script` in `audio`.
pub fn fake_loader(script: Script, audio: Vec<f32>) -> Box<dyn ModelLoader> {
    fake_loader_with(script, audio, Duration::ZERO)
}

/// Like [`fake_loader`], each decode taking at least `cost` of wall time.
pub fn fake_loader_with(script: Script, audio: Vec<f32>, cost: Duration) -> Box<dyn ModelLoader> {
    Box::new(FnLoader::new(
        vec![FAKE_MODEL.into()],
        fake_load(script, audio, cost),
    ))
}

/// A loader that waits for `gate` before loading the fake (for "not serving yet" tests).
pub fn gated_loader(
    script: Script,
    audio: Vec<f32>,
    gate: std::sync::mpsc::Receiver<()>,
) -> Box<dyn ModelLoader> {
    let load = fake_load(script, audio, Duration::ZERO);
    Box::new(FnLoader::new(
        vec![FAKE_MODEL.into()],
        Box::new(move || {
            let _ = gate.recv();
            load()
        }),
    ))
}

fn fake_load(script: Script, audio: Vec<f32>, cost: Duration) -> LoadFn {
    Box::new(move || {
        let fake = Arc::new(Mutex::new(ScriptedTranscriber::new(script, &audio)));
        let factory = move || -> Result<Box<dyn Decoder>, String> {
            let t = fake.lock().map_err(|_| "poisoned".to_owned())?.clone();
            Ok(Box::new(Slow {
                inner: Uninterruptible(t),
                cost,
            }))
        };
        let factory: Arc<dyn DecoderFactory> = Arc::new(factory);
        Ok(vec![LoadedModel {
            info: ModelInfo {
                name: FAKE_MODEL.into(),
                multilingual: false,
                attributes: Default::default(),
            },
            factory,
        }])
    })
}

/// A decoder that takes at least `cost` per call (sleeping in slices, cancellable).
struct Slow<D> {
    inner: D,
    cost: Duration,
}

impl<D: Decoder> Decoder for Slow<D> {
    fn decode(
        &mut self,
        samples: &[f32],
        options: &transcribe_core::DecodeOptions,
        cancel: &transcribe_server::pool::CancelHandle,
    ) -> Result<transcribe_core::Transcript, transcribe_core::EngineError> {
        let deadline = std::time::Instant::now() + self.cost;
        while std::time::Instant::now() < deadline {
            if cancel.is_cancelled() {
                return Err(transcribe_core::EngineError::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.inner.decode(samples, options, cancel)
    }
}

/// The real `tiny.en` loader, or `None` (with a note printed) when the model cannot be
/// resolved here.
pub fn whisper_loader(config: &ServerConfig) -> Option<Box<dyn ModelLoader>> {
    let spec = transcribe_models::ModelSpec::parse("tiny.en").ok()?;
    if let Err(error) =
        transcribe_models::resolve(&spec, &transcribe_models::FetchOptions::default())
    {
        eprintln!("note: skipping: tiny.en is not available here: {error}");
        return None;
    }
    match transcribe_server::WhisperLoader::from_config(config, Default::default()) {
        Ok(loader) => Some(Box::new(loader)),
        Err(error) => {
            eprintln!("note: skipping: {error}");
            None
        }
    }
}

/// 16-bit little-endian PCM of `samples`.
pub fn linear16(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32_767.0).round() as i16).to_le_bytes())
        .collect()
}

/// A config request for 16 kHz mono LINEAR16 (model empty = the server's default).
pub fn config_request(model: &str, interim: bool) -> StreamingRecognizeRequest {
    config_request_with(
        AudioFormat {
            encoding: AudioEncoding::Linear16.into(),
            sample_rate_hertz: 16_000,
            audio_channel_count: 1,
        },
        model,
        interim,
    )
}

/// A config request with `format`.
pub fn config_request_with(
    format: AudioFormat,
    model: &str,
    interim: bool,
) -> StreamingRecognizeRequest {
    StreamingRecognizeRequest {
        streaming_request: Some(StreamingRequest::StreamingConfig(
            StreamingRecognitionConfig {
                config: Some(RecognitionConfig {
                    audio_format: Some(format),
                    model: model.to_owned(),
                    enable_word_time_offsets: true,
                    enable_word_confidence: true,
                    ..Default::default()
                }),
                interim_results: interim,
                ..Default::default()
            },
        )),
    }
}

/// An audio request.
pub fn audio_request(bytes: Vec<u8>) -> StreamingRecognizeRequest {
    StreamingRecognizeRequest {
        streaming_request: Some(StreamingRequest::AudioContent(bytes)),
    }
}

/// Audio requests of `chunk_samples` each, as LINEAR16.
pub fn audio_requests(samples: &[f32], chunk_samples: usize) -> Vec<StreamingRecognizeRequest> {
    samples
        .chunks(chunk_samples.max(1))
        .map(|c| audio_request(linear16(c)))
        .collect()
}

/// Sends `requests` (then half-closes) and collects every response and the final status
/// (`Ok` for a clean end).
pub async fn raw_stream(
    client: &mut TranscriptionServiceClient<Channel>,
    requests: Vec<StreamingRecognizeRequest>,
) -> (Vec<StreamingRecognizeResponse>, Result<(), tonic::Status>) {
    let mut responses = Vec::new();
    let call = client
        .streaming_recognize(tokio_stream::iter(requests))
        .await;
    let mut inbound = match call {
        Ok(r) => r.into_inner(),
        Err(status) => return (responses, Err(status)),
    };
    loop {
        match inbound.next().await {
            Some(Ok(r)) => responses.push(r),
            Some(Err(status)) => return (responses, Err(status)),
            None => return (responses, Ok(())),
        }
    }
}

/// Like [`raw_stream`], with `interval` between requests (a live-like source).
pub async fn paced_stream(
    client: &mut TranscriptionServiceClient<Channel>,
    requests: Vec<StreamingRecognizeRequest>,
    interval: Duration,
) -> (Vec<StreamingRecognizeResponse>, Result<(), tonic::Status>) {
    let paced = tokio_stream::iter(requests).throttle(interval);
    let mut responses = Vec::new();
    let call = client.streaming_recognize(paced).await;
    let mut inbound = match call {
        Ok(r) => r.into_inner(),
        Err(status) => return (responses, Err(status)),
    };
    loop {
        match inbound.next().await {
            Some(Ok(r)) => responses.push(r),
            Some(Err(status)) => return (responses, Err(status)),
            None => return (responses, Ok(())),
        }
    }
}

/// The trimmed transcripts of a Recognize response's results, in order.
pub fn recognized_texts(response: &RecognizeResponse) -> Vec<String> {
    response
        .results
        .iter()
        .filter_map(|r| r.alternatives.first())
        .map(|a| a.transcript.trim().to_owned())
        .collect()
}

/// A server draining with one Recognize call (the first phrase of [`two_phrases`]) held in
/// its decode: the server, the hold that lets the decode finish, and the call. The drain
/// timeout is 60 s.
///
/// # Errors
/// When the server does not start, take the call or start draining in time.
pub async fn draining_with_a_held_call() -> TestResult<(
    TestServer,
    Hold,
    JoinHandle<Result<tonic::Response<RecognizeResponse>, tonic::Status>>,
)> {
    let (script, audio) = two_phrases()?;
    let hold = Hold::new();
    let mut config = ServerConfig::with_models(&[FAKE_MODEL])?;
    config.drain_timeout = Duration::from_secs(60);
    let mut server =
        TestServer::start_ready(config, held_loader(script, audio.clone(), hold.clone())).await?;
    let mut client = server.client().await?;
    let request = RecognizeRequest {
        config: Some(transcribe_proto::v1::RecognitionConfig::default()),
        audio_source: Some(
            transcribe_proto::v1::recognize_request::AudioSource::Content(wav_bytes(
                &audio[..40_000],
                16_000,
            )),
        ),
    };
    let in_flight = tokio::spawn(async move { client.recognize(request).await });
    server
        .wait_until(Duration::from_secs(10), |h| {
            h.pool_stats().is_some_and(|s| s.busy_workers == 1)
        })
        .await?;
    server.trigger_shutdown();
    server
        .wait_until(Duration::from_secs(10), |h| !h.is_serving())
        .await?;
    Ok((server, hold, in_flight))
}

/// The concatenated final transcripts of `responses`, trimmed.
pub fn final_text(responses: &[StreamingRecognizeResponse]) -> String {
    let mut text = String::new();
    for r in responses {
        for result in r.results.iter().filter(|r| r.is_final) {
            if let Some(top) = result.alternatives.first() {
                text.push_str(&top.transcript);
            }
        }
    }
    text.trim().to_owned()
}

/// A 16-bit mono WAV file of `samples` at `rate` Hz, in memory.
pub fn wav_bytes(samples: &[f32], rate: u32) -> Vec<u8> {
    let data = linear16(samples);
    let mut out = Vec::with_capacity(44 + data.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

/// Wraps a fake decoder in another (a panicking or a held one).
type WrapDecoder = Arc<dyn Fn(Box<dyn Decoder>) -> Box<dyn Decoder> + Send + Sync>;

/// A loader serving [`FAKE_MODEL`] (hearing `script` in `audio`) whose decoders are wrapped
/// by `wrap`: the shared body of [`panicky_loader`] and [`held_loader`].
fn wrapped_loader(script: Script, audio: Vec<f32>, wrap: WrapDecoder) -> Box<dyn ModelLoader> {
    let inner = fake_load(script, audio, Duration::ZERO);
    Box::new(FnLoader::new(
        vec![FAKE_MODEL.into()],
        Box::new(move || {
            let models = inner()?;
            let wrapped = models
                .into_iter()
                .map(|m| {
                    let base = m.factory.clone();
                    let wrap = wrap.clone();
                    let factory =
                        move || -> Result<Box<dyn Decoder>, String> { Ok(wrap(base.create()?)) };
                    let factory: Arc<dyn DecoderFactory> = Arc::new(factory);
                    LoadedModel {
                        info: m.info,
                        factory,
                    }
                })
                .collect();
            Ok(wrapped)
        }),
    ))
}

/// A loader serving [`FAKE_MODEL`] whose decoder panics when the prompt contains
/// "panic" and otherwise hears `script` in `audio`.
pub fn panicky_loader(script: Script, audio: Vec<f32>) -> Box<dyn ModelLoader> {
    wrapped_loader(script, audio, Arc::new(|d| Box::new(Panicky(d))))
}

struct Panicky(Box<dyn Decoder>);

impl Decoder for Panicky {
    fn decode(
        &mut self,
        samples: &[f32],
        options: &transcribe_core::DecodeOptions,
        cancel: &transcribe_server::pool::CancelHandle,
    ) -> Result<transcribe_core::Transcript, transcribe_core::EngineError> {
        if options
            .prompt
            .as_deref()
            .is_some_and(|p| p.contains("panic"))
        {
            panic!("scripted decoder panic");
        }
        self.0.decode(samples, options, cancel)
    }
}

/// A loader serving [`FAKE_MODEL`] whose scripted fake hears `script` in `audio` and
/// applies `fault` on the calls `when` selects (counted per worker's decoder).
pub fn faulty_loader(
    script: Script,
    audio: Vec<f32>,
    when: transcribe_core::fake::When,
    fault: transcribe_core::fake::Fault,
) -> Box<dyn ModelLoader> {
    faults_loader(script, audio, vec![(when, fault)])
}

/// Like [`faulty_loader`] with several faults (the first that matches a call applies).
pub fn faults_loader(
    script: Script,
    audio: Vec<f32>,
    faults: Vec<(transcribe_core::fake::When, transcribe_core::fake::Fault)>,
) -> Box<dyn ModelLoader> {
    Box::new(FnLoader::new(
        vec![FAKE_MODEL.into()],
        Box::new(move || {
            let fake = faults.into_iter().fold(
                ScriptedTranscriber::new(script, &audio),
                |f, (when, fault)| f.with_fault(when, fault),
            );
            let fake = Arc::new(Mutex::new(fake));
            let factory = move || -> Result<Box<dyn Decoder>, String> {
                let t = fake.lock().map_err(|_| "poisoned".to_owned())?.clone();
                Ok(Box::new(Uninterruptible(t)))
            };
            let factory: Arc<dyn DecoderFactory> = Arc::new(factory);
            Ok(vec![LoadedModel {
                info: ModelInfo {
                    name: FAKE_MODEL.into(),
                    multilingual: false,
                    attributes: Default::default(),
                },
                factory,
            }])
        }),
    ))
}

/// Holds every decode of a [`held_loader`] until released (decodes stay cancellable).
#[derive(Clone, Default)]
pub struct Hold(Arc<std::sync::atomic::AtomicBool>);

impl Hold {
    /// A closed hold: decodes wait.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets every waiting and later decode run.
    pub fn release(&self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn released(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A loader serving [`FAKE_MODEL`] whose decodes wait for `hold` to be released, then hear
/// `script` in `audio`.
pub fn held_loader(script: Script, audio: Vec<f32>, hold: Hold) -> Box<dyn ModelLoader> {
    wrapped_loader(
        script,
        audio,
        Arc::new(move |inner| {
            Box::new(Held {
                inner,
                hold: hold.clone(),
            })
        }),
    )
}

struct Held {
    inner: Box<dyn Decoder>,
    hold: Hold,
}

impl Decoder for Held {
    fn decode(
        &mut self,
        samples: &[f32],
        options: &transcribe_core::DecodeOptions,
        cancel: &transcribe_server::pool::CancelHandle,
    ) -> Result<transcribe_core::Transcript, transcribe_core::EngineError> {
        while !self.hold.released() {
            if cancel.is_cancelled() {
                return Err(transcribe_core::EngineError::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.inner.decode(samples, options, cancel)
    }
}

/// The `transcribe-server` binary of this build (beside the test executable's `deps/`
/// folder: `cargo build --release -p transcribe-server` puts it there).
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    dir.join("transcribe-server")
}

/// A `transcribe-server` process on a free loopback port; killed on drop if still running.
pub struct ServerProcess {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Lines of its log (stderr), as they arrive.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the binary with `args` (besides `--listen`) and waits until a log line
    /// contains `ready_line`.
    ///
    /// # Errors
    /// When the binary is missing, cannot start, or exits before `ready_line`.
    pub fn start(args: &[&str], ready_line: &str) -> TestResult<Self> {
        use std::io::BufRead;
        let bin = server_binary();
        if !bin.exists() {
            return Err(format!(
                "{} is missing: cargo build --release -p transcribe-server",
                bin.display()
            )
            .into());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut child = std::process::Command::new(bin)
            .args(["--listen", &listen])
            .args(args)
            .current_dir(workspace_root())
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let wanted = ready_line.to_owned();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains(&wanted)
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
                if let Ok(mut log) = sink.lock() {
                    log.push(line);
                }
            }
        });
        let mut server = Self {
            child,
            url: format!("http://{listen}"),
            log,
        };
        if ready_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            let _ = server.child.kill();
            return Err(format!("server not ready; log:\n{}", server.log_text()).into());
        }
        Ok(server)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name `kill` knows: TERM, INT) to the process.
    ///
    /// # Errors
    /// When `kill` cannot run or fails.
    pub fn signal(&self, signal: &str) -> TestResult {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("kill -{signal} failed: {status}").into());
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    ///
    /// # Errors
    /// When its status cannot be read.
    pub async fn wait_exit(
        &mut self,
        timeout: Duration,
    ) -> TestResult<Option<std::process::ExitStatus>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if tokio::time::Instant::now() > deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its log so far, one line each.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A CA and a server certificate for `localhost` and `127.0.0.1` signed by it, in PEM.
pub struct TestPki {
    /// The CA's certificate.
    pub ca: String,
    /// The server's certificate.
    pub cert: String,
    /// The server's private key.
    pub key: String,
}

///
/// # Errors
/// When rcgen fails.
pub fn test_pki() -> Result<TestPki, rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "transcribe test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = server.signed_by(&key, &ca)?;
    Ok(TestPki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A 16 kHz WAV file of `samples` in the temporary folder, named for the test and process.
///
/// # Errors
/// When it cannot be written.
pub fn temp_wav(name: &str, samples: &[f32]) -> TestResult<PathBuf> {
    let path =
        std::env::temp_dir().join(format!("transcribe-test-{}-{name}.wav", std::process::id()));
    std::fs::write(&path, wav_bytes(samples, 16_000))?;
    Ok(path)
}

/// A configuration serving `model` with the one caption source `spec` (`--source` syntax).
///
/// # Errors
/// When `spec` or `model` is invalid.
pub fn with_source(model: &str, spec: &str) -> TestResult<ServerConfig> {
    let mut config = ServerConfig::with_models(&[model])?;
    config.sources = vec![transcribe_server::config::SourceSpec::parse(spec)?];
    Ok(config)
}

/// One raw HTTP/1.1 request to `server` (`Connection: close`); the status and the body, a
/// chunked body joined.
///
/// # Errors
/// When the server cannot be reached, does not answer in 30 s or answers no status line.
pub async fn http_request(server: &TestServer, request: &[u8]) -> TestResult<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await?;
    socket.write_all(request).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), socket.read_to_end(&mut raw)).await??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok((status, body.to_owned()));
    }
    let mut joined = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16)?;
        if size == 0 {
            break;
        }
        joined.push_str(after.get(..size).ok_or("short chunk")?);
        rest = after.get(size + 2..).unwrap_or_default();
    }
    Ok((status, joined))
}

/// A GET of `path` ([`http_request`]).
///
/// # Errors
/// As [`http_request`].
pub async fn http_get(server: &TestServer, path: &str) -> TestResult<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    http_request(server, request.as_bytes()).await
}
