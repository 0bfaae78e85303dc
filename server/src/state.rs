//! State shared by every door of the server: the configuration, the served names, the
//! loaded half ([`Ready`]: the engine pool and model facts, set once loading is done), the
//! caption hubs, the drain token and the tracker of open calls.
//!
//! Calls are tracked from their start (before their config is read) to their end, whatever
//! the end, by the [`TaskTracker`]: the drain waits on it instead of polling a counter.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::captions::CaptionRegistry;
use crate::config::ServerConfig;
use crate::error::{Capacity, RequestError};
use crate::metrics::{CallGuard, Metrics, ReasonLabels};
use crate::models::ModelInfo;
use crate::pool::{AdmitError, EnginePool, StreamLease};

/// The loaded half of the server: the pool and what it serves.
pub(crate) struct Ready {
    pub pool: EnginePool,
    pub models: Vec<ModelInfo>,
}

/// State shared by every call.
pub(crate) struct AppState {
    pub config: ServerConfig,
    /// Served names, the default first (known before loading).
    pub names: Vec<String>,
    pub ready: OnceLock<Ready>,
    /// Cancelled when draining starts: new calls are refused, streams flush their finals and
    /// end with UNAVAILABLE.
    pub drain: CancellationToken,
    /// StreamingRecognize and Recognize calls in progress.
    pub calls: TaskTracker,
    /// The caption sources' broadcast hubs (`--source`), known before loading.
    pub captions: CaptionRegistry,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
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
            calls: TaskTracker::new(),
            metrics: Arc::new(Metrics::new()),
            next_request: AtomicU64::new(1),
            instance,
        }
    }

    /// Whether the server has started draining.
    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// A new request id, unique within this process and unlikely to repeat across restarts.
    pub fn request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}-{n:06}", self.instance)
    }

    /// The pool and models, or UNAVAILABLE while loading or draining.
    pub fn ready(&self) -> Result<&Ready, RequestError> {
        if self.is_draining() {
            return Err(RequestError::Draining);
        }
        self.ready.get().ok_or(RequestError::Loading)
    }

    /// Counts `error` under its refusal reason when it refuses a call (overload, loading,
    /// draining, a missing token).
    pub fn count_refusal(&self, error: &RequestError) {
        if let Some(reason) = error.refusal_reason() {
            self.metrics
                .refusals
                .get_or_create(&ReasonLabels { reason })
                .inc();
        }
    }

    /// Records how a call ended: its result on `call` (a cancelled call stays counted as
    /// `cancelled`) and, for a refusal, its reason.
    pub fn call_ended(&self, call: &mut CallGuard<'_>, result: Result<(), &RequestError>) {
        match result {
            Ok(()) => call.finish(Ok(())),
            Err(RequestError::Cancelled) => {}
            Err(error) => {
                call.finish(Err(error.to_status().code()));
                self.count_refusal(error);
            }
        }
    }

    /// Admits a stream (or unary call, or caption source) into the pool.
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
            AdmitError::Behind(_) => RequestError::Overloaded {
                capacity: Capacity::Compute,
                reason: e.to_string(),
            },
        })
    }
}
