//! The transcribe gRPC server: real-time streaming recognition (`transcribe.v1`) on one
//! shared Whisper model and a pool of inference workers, with health and reflection.
//!
//! The binary (`transcribe-server`) only parses flags and wires things; everything lives in
//! this library so tests start a real server on `127.0.0.1:0` with an injected shutdown
//! future and a fake engine ([`models::FnLoader`]).
//!
//! # Layout
//! Dependencies point one way: the doors (`service`, `ws`, `session`, [`sources`]) use the
//! pipeline, which uses the state and the pieces below it; nothing below imports upward
//! (`scripts/check-module-cycles` checks it).
//!
//! Doors:
//! - `service` (private): the `TranscriptionService` gRPC implementation (StreamingRecognize,
//!   Recognize, StreamCaptions, ListModels).
//! - `rest` (private): the HTTP door on the same port: an OpenAI-compatible
//!   `/v1/audio/transcriptions` and `/v1/audio/translations`, `/v1/models`, `/healthz` and
//!   `/readyz`.
//! - `ws` (private): the WebSocket door for browsers (docs/WEBSOCKET.md): `/v1/stream` runs a
//!   StreamingRecognize session (JSON config and responses, binary audio), `/v1/captions` a
//!   StreamCaptions subscription; errors close with 4000 + the gRPC code.
//! - `web` (private): the captions page at `/` (files compiled in) and `/v1/info`.
//! - `unary` (private): whole-audio recognition (one job), shared by Recognize and REST.
//! - [`metrics`]: the Prometheus metrics (`GET /metrics`).
//! - `session` (private): one StreamingRecognize call as a tokio task, whichever door it came
//!   through (gRPC, WebSocket): reads the config and audio, drives its pipeline, sends
//!   responses through a bounded outbound slot.
//! - [`sources`]: server-side capture sources (`--source file:PATH[:loop]`, `mic[:DEVICE]`),
//!   each driving one pipeline whose updates go to its caption hub.
//!
//! The pipeline and what it stands on:
//! - `pipeline` (private): everything between the streaming policy and a response (policy,
//!   pool lease, decode in flight, arrival marks), turning policy events into plain updates
//!   with a delivery class.
//! - `recognition` (private): request validation (`RecognitionConfig`,
//!   `StreamingRecognitionConfig`, a source's settings) into policy and pipeline settings.
//! - `state` (private): what every call shares (config, loaded pool and models, caption
//!   hubs, the drain token and the tracker of open calls).
//! - [`captions`]: the StreamCaptions broadcast: one hub per source, a bounded queue per
//!   subscriber (interims keep the latest, finals never dropped, a hopelessly slow
//!   subscriber ended with RESOURCE_EXHAUSTED), recent finals for late joiners.
//! - `delivery` (private): the delivery class (replaceable interim or heartbeat,
//!   must-deliver final, event or state) every queue toward clients uses.
//! - [`pool`]: the engine pool: N worker threads each owning a decoder per model, one
//!   queue with one place per admitted stream, admission control, replace-stale, cancellation
//!   through the engine's abort callback, panic isolation.
//! - [`ingest`]: per-stream audio validation and conversion (LINEAR16, FLOAT32, MULAW, ALAW at
//!   8-48 kHz, 1-8 channels, to 16 kHz mono).
//! - [`convert`]: engine values to API messages (durations, words, results).
//! - [`models`]: what is served: names known up front, a [`ModelLoader`] run after binding
//!   ([`WhisperLoader`] for ggml files with the `whisper` feature, [`FnLoader`] for tests).
//! - [`config`]: flags with `TRANSCRIBE_*` environment equivalents ([`ServerArgs`]),
//!   validated into a [`ServerConfig`] before the port is bound; caption source specs.
//! - [`error`]: [`RequestError`], its single mapping to gRPC statuses
//!   ([`RequestError::to_status`]) and the single mapping of failed decodes
//!   ([`RequestError::decode_failed`]); [`ServerError`] for start-up and transport failures.
//! - `backend` (private): what this build decodes on (whisper.cpp's backend, or none).
//! - [`auth`]: `--auth-token-file`: bearer tokens (kept as SHA-256 digests, compared in
//!   constant time) checked by an interceptor on every service except health.
//! - [`tls`]: `--tls-cert`/`--tls-key`: PEM files checked at start-up for tonic's rustls.
//!
//! The Rust client for this API (streaming, latency measures) is the `transcribe-client`
//! crate.
//!
//! # Channels, capacities and what happens when they are full
//! - Client audio in: tonic's `Streaming` read one message at a time; HTTP/2 flow control
//!   pushes back on the client while the session is busy (**block**).
//! - Decode jobs (`pool`): one queue place per admitted stream, so the queue is bounded by
//!   `--max-streams`; a stream never has two jobs in flight. New streams are refused with
//!   RESOURCE_EXHAUSTED when `--max-streams` streams are open or `--queue-depth` jobs wait
//!   (**fail fast**).
//! - Decode results: one `oneshot` per job (capacity 1 by construction).
//! - Responses out: [`OUTBOUND_CAPACITY`] per stream; interims and heartbeats
//!   **keep only the latest**, finals, events and the closing status **block** the session.
//! - Captions out: [`config::SUBSCRIBER_QUEUE_CAPACITY`] undelivered finals/states per
//!   subscriber; interims **keep only the latest** (a gap in `sequence_number`); when full
//!   the subscriber is **ended** with RESOURCE_EXHAUSTED (a source never waits for anyone).
//!   [`config::HISTORY_CAPACITY`] finals of history per source (**drop oldest**).
//!
//! # Shutdown
//! [`run`] takes a shutdown future. When it resolves: health turns NOT_SERVING and new calls
//! get UNAVAILABLE while the listener stays open; a stream in the middle of an utterance
//! reads audio until the utterance ends (at most half of `--drain-timeout`), then every
//! stream stops reading, flushes its finals and ends with UNAVAILABLE; unary calls finish.
//! Once no call is open (or at `--drain-timeout`, when what is left is cancelled: decodes
//! through the abort callback) the transport stops and the workers are joined.
//!
//! # Example
//! ```no_run
//! use transcribe_server::{ServerConfig, WhisperLoader, run};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ServerConfig::with_models(&["tiny.en"])?;
//! let loader = WhisperLoader::from_config(&config, Default::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! run(listener, config, Box::new(loader), async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod auth;
mod backend;
pub mod captions;
pub mod config;
pub mod convert;
mod delivery;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod models;
mod pipeline;
pub mod pool;
mod recognition;
mod rest;
mod schedule;
mod service;
mod session;
pub mod sources;
mod state;
pub mod tls;
mod transport;
mod unary;
mod web;
mod ws;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use transcribe_core::audio::samples_to_seconds;
use transcribe_core::policy::PolicyConfig;
use transcribe_proto::v1::transcription_service_server::TranscriptionServiceServer;

pub use captions::CaptionStats;
pub use config::{CaptionLimits, ConfigError, ServerArgs, ServerConfig};
pub use error::{Capacity, RequestError, ServerError};
#[cfg(feature = "whisper")]
pub use models::WhisperLoader;
pub use models::{FnLoader, LoadedModel, ModelInfo, ModelLoader};
pub use pool::PoolStats;
pub use session::OUTBOUND_CAPACITY;

use crate::pool::{EnginePool, PoolLimits};
use crate::service::Service;
use crate::state::{AppState, Ready};

/// The gRPC service name health reports on (besides the overall `""`).
pub const SERVICE_NAME: &str = "transcribe.v1.TranscriptionService";

/// After the drain (all calls ended, or `--drain-timeout`), time the transport has to
/// deliver the last statuses and close its connections before they are dropped.
const DRAIN_LAST_WORDS: std::time::Duration = std::time::Duration::from_millis(500);

/// A server before it runs: lets tests observe it while it serves.
pub struct Server {
    state: Arc<AppState>,
    loader: Box<dyn ModelLoader>,
}

/// A view of a running server's state, for tests and metrics.
#[derive(Clone)]
pub struct ServerHandle {
    state: Arc<AppState>,
}

impl ServerHandle {
    /// The engine pool's gauges and counters; `None` while the models load.
    pub fn pool_stats(&self) -> Option<PoolStats> {
        self.state.ready.get().map(|r| r.pool.stats())
    }

    /// The broadcast counters of caption source `name` (empty: the default source).
    pub fn caption_stats(&self, name: &str) -> Option<CaptionStats> {
        self.state.captions.find(name).ok().map(|hub| hub.stats())
    }

    /// StreamingRecognize and Recognize calls in progress (counted from the call's start,
    /// before its config is read, to its end, whatever the end).
    pub fn open_calls(&self) -> usize {
        self.state.calls.len()
    }

    /// Whether the models are loaded and the server takes streams.
    pub fn is_serving(&self) -> bool {
        self.state.ready.get().is_some() && !self.state.is_draining()
    }
}

impl Server {
    /// A server with `config` serving what `loader` loads.
    pub fn new(config: ServerConfig, loader: Box<dyn ModelLoader>) -> Self {
        let names = loader.names();
        Self {
            state: Arc::new(AppState::new(config, names)),
            loader,
        }
    }

    /// A handle on the server's state.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            state: self.state.clone(),
        }
    }

    /// Serves on `listener` until `shutdown` resolves, then drains (see the crate doc).
    /// Models load after the listener is serving; health is NOT_SERVING until they are.
    ///
    /// # Errors
    /// [`ServerError::ModelLoad`] or [`ServerError::Worker`] when loading fails (the server
    /// stops), [`ServerError::Io`] when the listener fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let Self { state, loader } = self;
        let (reporter, health) = tonic_health::server::health_reporter();
        set_health(&reporter, ServingStatus::NotServing).await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(transcribe_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(transcribe_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;
        let service = TranscriptionServiceServer::new(Service {
            state: state.clone(),
        })
        .max_decoding_message_size(state.config.max_message_bytes);
        // Security (auth, tls): health stays open to probes; reflection and the API need a
        // bearer token when --auth-token-file is set.
        let authenticator = auth::Authenticator::new(state.config.auth.clone());
        let reflection = InterceptedService::new(reflection, authenticator.clone());
        let reflection_alpha = InterceptedService::new(reflection_alpha, authenticator.clone());
        let service = InterceptedService::new(service, authenticator.clone());
        let tls = match &state.config.tls {
            Some(identity) => Some(
                identity
                    .server_config()
                    .map_err(|e| ServerError::Tls(e.to_string()))?,
            ),
            None => None,
        };
        let local = listener.local_addr()?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // One listener: the gRPC services and the HTTP doors (REST, health, WebSocket, the
        // page) on one router, HTTP/1.1 beside HTTP/2 (`transport`).
        let grpc = tonic::service::Routes::new(health)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(service);
        // gRPC-Web (browsers: unary and server-streaming calls) on the gRPC services.
        let router = grpc
            .into_axum_router()
            .layer(tonic_web::GrpcWebLayer::new())
            .merge(rest::router(state.clone()))
            .merge(ws::router(state.clone()))
            .merge(web::router(state.clone()));
        let router = match web::cors(&state.config.cors) {
            Some(cors) => router.layer(cors),
            None => router,
        };
        let server = transport::serve(listener, tls, router, async {
            let _ = stop_rx.await;
        });
        tokio::pin!(server);
        tokio::pin!(shutdown);
        tracing::info!(message = "Listening.", address = %local, models = ?state.names);
        log_security(local, &authenticator, state.config.tls.as_ref());
        log_stream_policy(&state.config.stream_policy());

        let config = state.config.clone();
        let metrics = state.metrics.clone();
        let load = tokio::task::spawn_blocking(move || -> Result<Ready, ServerError> {
            let started = std::time::Instant::now();
            let loaded = loader.load()?;
            metrics
                .model_load_seconds
                .set(started.elapsed().as_secs_f64());
            let models = loaded.iter().map(|m| m.info.clone()).collect();
            let factories = loaded.into_iter().map(|m| m.factory).collect();
            let limits = PoolLimits {
                workers: config.workers,
                max_streams: config.max_streams,
                queue_depth: config.queue_depth,
                admission_wait: config.admission_wait,
            };
            let pool = EnginePool::start(factories, limits).map_err(ServerError::Worker)?;
            Ok(Ready { pool, models })
        });
        tokio::pin!(load);

        let mut loading = true;
        loop {
            tokio::select! {
                result = &mut server => {
                    shutdown_pool(&state).await;
                    return result.map_err(ServerError::from);
                }
                loaded = &mut load, if loading => {
                    loading = false;
                    let ready = match loaded {
                        Ok(Ok(ready)) => ready,
                        Ok(Err(error)) => {
                            tracing::error!(message = "Loading failed; stopping.", %error);
                            let _ = stop_tx.send(());
                            let _ = server.await;
                            return Err(error);
                        }
                        Err(join) => {
                            let _ = stop_tx.send(());
                            let _ = server.await;
                            return Err(ServerError::Worker(format!("model loading panicked: {join}")));
                        }
                    };
                    let _ = state.ready.set(ready);
                    sources::start(&state);
                    set_health(&reporter, ServingStatus::Serving).await;
                    tracing::info!(message = "Serving.", address = %local);
                }
                () = &mut shutdown => break,
            }
        }

        // Drain.
        tracing::info!(
            message = "Draining.",
            timeout_seconds = state.config.drain_timeout.as_secs_f64()
        );
        state.drain.cancel();
        state.calls.close();
        set_health(&reporter, ServingStatus::NotServing).await;
        // The listener stays open while calls finish, so that health reads NOT_SERVING and
        // new calls get UNAVAILABLE instead of a refused connection.
        let deadline = tokio::time::Instant::now() + state.config.drain_timeout;
        let stopped = tokio::select! {
            () = state.calls.wait() => None,
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(
                    message = "Drain timed out; cancelling what is left.",
                    open_calls = state.calls.len()
                );
                None
            }
            result = &mut server => Some(result),
        };
        if stopped.is_none() && !state.calls.is_empty() {
            // Cancel the decodes of what is left: those calls end with UNAVAILABLE.
            shutdown_pool(&state).await;
        }
        let _ = stop_tx.send(());
        let result = match stopped {
            Some(result) => result.map_err(ServerError::from),
            None => {
                let last = deadline.max(tokio::time::Instant::now()) + DRAIN_LAST_WORDS;
                match tokio::time::timeout_at(last, &mut server).await {
                    Ok(result) => result.map_err(ServerError::from),
                    Err(_) => {
                        tracing::warn!(message = "Connections still open; closing them.");
                        Ok(())
                    }
                }
            }
        };
        shutdown_pool(&state).await;
        tracing::info!(message = "Stopped.");
        result
    }
}

/// Sets the gRPC health status of the server (`""`) and of its service.
async fn set_health(reporter: &tonic_health::server::HealthReporter, status: ServingStatus) {
    for service in ["", SERVICE_NAME] {
        reporter.set_service_status(service, status).await;
    }
}

/// The streaming schedule that streams start from (`bench/capacity.py` reads `step_ms`: a
/// stream whose partials come further apart has had its step widened, i.e. fell behind).
fn log_stream_policy(policy: &PolicyConfig) {
    let ms = |samples: usize| samples_to_seconds(samples) * 1e3;
    tracing::info!(
        message = "Streaming policy.",
        step_ms = ms(policy.step_samples),
        max_step_ms = ms(policy.max_step_samples),
        min_partial_ms = ms(policy.min_partial_samples),
        min_commit_ms = ms(policy.min_commit_samples),
        endpoint_ms = ms(policy.vad.end_silence_samples),
        max_utterance_ms = ms(policy.max_utterance_samples),
        partial_ctx_floor = policy.audio_ctx_floor,
        partial_ctx_margin = policy.audio_ctx_margin,
        partial_prefix = policy.partial_prefix,
    );
}

/// Says how the server is protected; warns when it listens beyond loopback without tokens.
fn log_security(
    local: std::net::SocketAddr,
    authenticator: &auth::Authenticator,
    tls: Option<&tls::TlsIdentity>,
) {
    tracing::info!(
        message = "Security.",
        auth = if authenticator.is_enabled() {
            "bearer token"
        } else {
            "none"
        },
        tls = tls.map_or("off".to_owned(), |t| t.cert_path().display().to_string())
    );
    if !local.ip().is_loopback() && !authenticator.is_enabled() {
        tracing::warn!(
            message = "Listening beyond loopback without authentication: anyone who can reach this address can use the server. Set --auth-token-file (and --tls-cert/--tls-key).",
            address = %local
        );
    }
}

async fn shutdown_pool(state: &Arc<AppState>) {
    let state = state.clone();
    let joined = tokio::task::spawn_blocking(move || {
        if let Some(ready) = state.ready.get() {
            ready.pool.shutdown();
        }
    })
    .await;
    if joined.is_err() {
        tracing::error!(message = "Pool shutdown panicked.");
    }
}

/// Serves on `listener` until `shutdown` resolves (mini-redis style). See [`Server::serve`].
///
/// # Errors
/// As [`Server::serve`].
pub async fn run(
    listener: TcpListener,
    config: ServerConfig,
    loader: Box<dyn ModelLoader>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    Server::new(config, loader).serve(listener, shutdown).await
}
