//! Prometheus metrics (`GET /metrics`, OpenMetrics text through `prometheus-client`): calls by
//! door and result, refusals by reason, decode time by kind, audio processed, the decodes'
//! real-time factor, first-result and final latency, queue depth, open streams, caption
//! subscribers, model load time and the build's backend.
//!
//! Counters and histograms are updated where things happen (the doors, the pipeline, the
//! whole-audio path, admission); gauges of the pool and the hubs are read when scraped.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a call: the door it came through, its kind and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `grpc` or `rest` (later `websocket`).
    pub door: &'static str,
    /// `stream` or `unary`.
    pub kind: &'static str,
    /// `ok`, or the gRPC code's name in lower case (`invalid_argument`, `unavailable`, ...).
    pub result: String,
}

/// Labels of an open call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpenLabels {
    /// As [`CallLabels::door`].
    pub door: &'static str,
    /// As [`CallLabels::kind`].
    pub kind: &'static str,
}

/// Labels of a decode: `partial`, `final` (streams, caption sources) or `file` (unary).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecodeLabels {
    /// What the decode was for.
    pub kind: &'static str,
}

/// A refusal's `ErrorInfo` reason (`TOO_MANY_STREAMS`, `QUEUE_FULL`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The reason.
    pub reason: &'static str,
}

/// A caption source's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The source.
    pub source: String,
}

/// The build: backend and whisper.cpp.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// `cpu`, `cuda`, `metal`, `vulkan` or `none`.
    pub backend: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A counter of seconds (`audio_seconds_total` of one door and kind).
pub type AudioCounter = Counter<f64, AtomicU64>;

fn seconds_buckets() -> Histogram {
    // 10 ms to about 41 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

fn ratio_buckets() -> Histogram {
    // Real-time factor 0.005 to about 20.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// Every metric the server keeps.
pub struct Metrics {
    registry: Registry,
    /// Calls ended, by door, kind and result.
    pub calls: Family<CallLabels, Counter>,
    /// Calls open now, by door and kind.
    pub open: Family<OpenLabels, Gauge>,
    /// Calls refused by admission or a limit, by reason.
    pub refusals: Family<ReasonLabels, Counter>,
    /// Decode time, by kind.
    pub decode_seconds: HistogramFamily<DecodeLabels>,
    /// Decode time over the audio it covered, by kind.
    pub real_time_factor: HistogramFamily<DecodeLabels>,
    /// Time a decode waited for a worker, by kind.
    pub queue_wait_seconds: HistogramFamily<DecodeLabels>,
    /// The workers' busy fraction over the last 10 s (read when scraped).
    pub worker_busy_ratio: Gauge<f64, AtomicU64>,
    /// The 95th percentile of queue waits over the last 10 s (read when scraped).
    pub recent_queue_wait_p95: Gauge<f64, AtomicU64>,
    /// The 95th percentile of partials' wait plus decode time over the last 10 s (read when
    /// scraped).
    pub recent_partial_round_trip_p95: Gauge<f64, AtomicU64>,
    /// Audio received and recognized, in seconds, by door.
    pub audio_seconds: Family<OpenLabels, AudioCounter>,
    /// From a stream's first audio arriving to its first result (interim or final).
    pub first_result_seconds: Histogram,
    /// From an utterance's last audio arriving to its final.
    pub final_seconds: Histogram,
    /// Decodes waiting for a worker (read when scraped).
    pub queue_depth: Gauge,
    /// Streams, unary calls and sources holding a place in the pool (read when scraped).
    pub pool_streams: Gauge,
    /// StreamCaptions subscribers by source (read when scraped).
    pub subscribers: Family<SourceLabels, Gauge>,
    /// Seconds the models took to load.
    pub model_load_seconds: Gauge<f64, AtomicU64>,
    /// 1, labelled with the build's backend.
    pub build: Family<BuildLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("transcribe");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Calls ended, by door, kind and result",
            calls.clone(),
        );
        let open = Family::<OpenLabels, Gauge>::default();
        registry.register(
            "open_calls",
            "Calls open now, by door and kind",
            open.clone(),
        );
        let refusals = Family::<ReasonLabels, Counter>::default();
        registry.register("refusals", "Calls refused, by reason", refusals.clone());
        let decode_seconds: HistogramFamily<DecodeLabels> =
            Family::new_with_constructor(seconds_buckets);
        registry.register(
            "decode_seconds",
            "Time of one decode, by kind (partial, final, file)",
            decode_seconds.clone(),
        );
        let real_time_factor: HistogramFamily<DecodeLabels> =
            Family::new_with_constructor(ratio_buckets);
        registry.register(
            "decode_real_time_factor",
            "Decode time over the audio it covered, by kind",
            real_time_factor.clone(),
        );
        let queue_wait_seconds: HistogramFamily<DecodeLabels> =
            Family::new_with_constructor(seconds_buckets);
        registry.register(
            "queue_wait_seconds",
            "Time a decode waited for a worker, by kind",
            queue_wait_seconds.clone(),
        );
        let worker_busy_ratio = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "worker_busy_ratio",
            "Fraction of the inference workers' time spent decoding over the last 10 s",
            worker_busy_ratio.clone(),
        );
        let recent_queue_wait_p95 = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "recent_queue_wait_p95_seconds",
            "95th percentile of the time decodes waited for a worker over the last 10 s",
            recent_queue_wait_p95.clone(),
        );
        let recent_partial_round_trip_p95 = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "recent_partial_round_trip_p95_seconds",
            "95th percentile of partial decodes' wait plus decode time over the last 10 s",
            recent_partial_round_trip_p95.clone(),
        );
        let audio_seconds = Family::<OpenLabels, AudioCounter>::default();
        registry.register(
            "audio_seconds",
            "Seconds of audio received for recognition, by door and kind",
            audio_seconds.clone(),
        );
        let first_result_seconds = seconds_buckets();
        registry.register(
            "first_result_latency_seconds",
            "From the audio a stream's first result covers arriving to that result",
            first_result_seconds.clone(),
        );
        let final_seconds = seconds_buckets();
        registry.register(
            "final_latency_seconds",
            "From an utterance's last audio arriving to its final result",
            final_seconds.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Decodes waiting for a worker",
            queue_depth.clone(),
        );
        let pool_streams = Gauge::default();
        registry.register(
            "pool_streams",
            "Streams, unary calls and caption sources holding a place in the pool",
            pool_streams.clone(),
        );
        let subscribers = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "caption_subscribers",
            "StreamCaptions subscribers, by source",
            subscribers.clone(),
        );
        let model_load_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "model_load_seconds",
            "Seconds the models took to load",
            model_load_seconds.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build",
            "The build: 1, labelled with its backend",
            build.clone(),
        );
        build
            .get_or_create(&BuildLabels {
                backend: crate::backend::name(),
            })
            .set(1);
        Self {
            registry,
            calls,
            open,
            refusals,
            decode_seconds,
            real_time_factor,
            queue_wait_seconds,
            worker_busy_ratio,
            recent_queue_wait_p95,
            recent_partial_round_trip_p95,
            audio_seconds,
            first_result_seconds,
            final_seconds,
            queue_depth,
            pool_streams,
            subscribers,
            model_load_seconds,
            build,
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one decode of `kind` that waited `queued` for a worker and took `inference`
    /// for `audio_seconds` of audio.
    pub fn decoded(
        &self,
        kind: &'static str,
        queued: Duration,
        inference: Duration,
        audio_seconds: f64,
    ) {
        let labels = DecodeLabels { kind };
        self.queue_wait_seconds
            .get_or_create(&labels)
            .observe(queued.as_secs_f64());
        let seconds = inference.as_secs_f64();
        self.decode_seconds.get_or_create(&labels).observe(seconds);
        if audio_seconds > 0.0 {
            self.real_time_factor
                .get_or_create(&labels)
                .observe(seconds / audio_seconds);
        }
    }

    /// Counts `seconds` of audio received through `door` for a call of `kind`.
    pub fn audio(&self, door: &'static str, kind: &'static str, seconds: f64) {
        self.audio_counter(door, kind).inc_by(seconds);
    }

    /// The counter of audio received through `door` for calls of `kind`, to keep and bump
    /// without a label look-up (a stream counts every chunk).
    pub fn audio_counter(&self, door: &'static str, kind: &'static str) -> AudioCounter {
        self.audio_seconds
            .get_or_create(&OpenLabels { door, kind })
            .clone()
    }

    /// A call through `door` of `kind` starts; the guard counts its end with its result.
    pub fn call(&self, door: &'static str, kind: &'static str) -> CallGuard<'_> {
        self.open.get_or_create(&OpenLabels { door, kind }).inc();
        CallGuard {
            metrics: self,
            door,
            kind,
            result: None,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// An open call; dropping it counts the call as ended (`cancelled` unless a result was set).
pub struct CallGuard<'a> {
    metrics: &'a Metrics,
    door: &'static str,
    kind: &'static str,
    result: Option<String>,
}

impl CallGuard<'_> {
    /// Sets how the call ended: `ok`, or a gRPC code's name.
    pub fn finish(&mut self, result: Result<(), tonic::Code>) {
        self.result = Some(match result {
            Ok(()) => "ok".to_owned(),
            Err(code) => code_name(code),
        });
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        let labels = OpenLabels {
            door: self.door,
            kind: self.kind,
        };
        self.metrics.open.get_or_create(&labels).dec();
        let result = self.result.take().unwrap_or_else(|| "cancelled".to_owned());
        self.metrics
            .calls
            .get_or_create(&CallLabels {
                door: self.door,
                kind: self.kind,
                result,
            })
            .inc();
    }
}

/// A gRPC code's name in lower snake case (`resource_exhausted`).
fn code_name(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_with_their_result() {
        let metrics = Metrics::new();
        {
            let mut call = metrics.call("rest", "unary");
            call.finish(Err(tonic::Code::ResourceExhausted));
        }
        drop(metrics.call("grpc", "stream"));
        metrics.audio("rest", "unary", 1.5);
        metrics.decoded(
            "file",
            Duration::from_millis(20),
            Duration::from_millis(300),
            3.0,
        );
        let text = metrics.encode();
        for line in [
            "transcribe_calls_total{door=\"rest\",kind=\"unary\",result=\"resource_exhausted\"} 1",
            "transcribe_calls_total{door=\"grpc\",kind=\"stream\",result=\"cancelled\"} 1",
            "transcribe_open_calls{door=\"rest\",kind=\"unary\"} 0",
            "transcribe_audio_seconds_total{door=\"rest\",kind=\"unary\"} 1.5",
            "transcribe_decode_seconds_count{kind=\"file\"} 1",
            "transcribe_queue_wait_seconds_count{kind=\"file\"} 1",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
