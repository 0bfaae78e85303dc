//! The engine pool: N inference worker threads sharing the loaded model(s), each owning its
//! own decoding state per model, fed by one bounded queue, with admission control.
//!
//! - Streams are admitted with [`EnginePool::admit`], which refuses (the caller answers
//!   RESOURCE_EXHAUSTED) when `max_streams` streams are open, `queue_depth` jobs already wait
//!   for a worker, or decodes already come back too late ([`crate::schedule::AdmissionRule`]):
//!   admitted streams keep their latency instead of everyone slowing down.
//! - A free worker takes the next job by [`crate::schedule::next`]: finals before partials,
//!   the longest-waiting stream first, partials aged into the finals' rank after a second.
//! - A stream has at most one decode in flight: [`StreamLease::submit`] while a job of the
//!   same stream is still queued replaces that stale job in place (it keeps its queue position
//!   and is returned to the caller); while one is running, the new job waits beside the
//!   stream and is queued when the running one finishes.
//! - The queue holds at most one entry per admitted stream, so it is bounded by
//!   `max_streams` by construction; `queue_depth` is the admission threshold.
//! - Dropping a [`StreamLease`] (client gone, stream done) removes its queued job, cancels its
//!   running decode through the engine's abort callback ([`CancelHandle`]) and frees the slot.
//! - Inference runs only on the worker threads (blocking FFI, never on the tokio runtime). A
//!   panic inside a decoder is caught, answered as an inference error for that job only, and
//!   the worker rebuilds its decoder.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use transcribe_core::{DecodeOptions, EngineError, Transcript};

pub use crate::schedule::Priority;
use crate::schedule::{self, AdmissionRule, Load, LoadWindow};

pub use transcribe_core::{CancelHandle, Decoder, DecoderFactory, Uninterruptible};

/// Limits of a pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolLimits {
    /// Worker threads (concurrent decodes).
    pub workers: usize,
    /// Streams admitted at once.
    pub max_streams: usize,
    /// Jobs waiting for a worker above which new streams are refused.
    pub queue_depth: usize,
    /// How late decodes may come back before new streams are refused (queue wait or a
    /// partial's wait plus decode time at p95 over the last 10 s, or the oldest job's wait:
    /// [`AdmissionRule`]); zero turns this rule off.
    pub admission_wait: Duration,
}

/// One decode request of a stream.
#[derive(Debug)]
pub struct Job {
    /// Index of the model in the pool's factory list.
    pub model: usize,
    /// 16 kHz mono samples.
    pub samples: Vec<f32>,
    /// Decode options.
    pub options: DecodeOptions,
    /// How urgent it is (finals run before partials).
    pub priority: Priority,
    /// The caller's id for this job, echoed in [`JobOutput::tag`].
    pub tag: u64,
}

/// The outcome of a [`Job`].
#[derive(Debug)]
pub struct JobOutput {
    /// The job's [`Job::tag`].
    pub tag: u64,
    /// What the engine returned.
    pub result: Result<Transcript, EngineError>,
    /// Time from submission to a worker starting it.
    pub queued: Duration,
    /// Time the decode itself took.
    pub inference: Duration,
    /// Samples decoded.
    pub samples: usize,
}

/// A job waiting in a stream's slot, with the channel its output goes to.
struct Pending {
    job: Job,
    reply: oneshot::Sender<JobOutput>,
    submitted: Instant,
}

/// A stream's place in the pool.
struct Slot {
    pending: Option<Pending>,
    /// Whether the stream's id is in the queue now.
    queued: bool,
    /// When the stream took its queue place (a replaced job keeps it).
    queued_since: Instant,
    /// Whether a worker is decoding this stream's job now.
    running: bool,
    cancel: CancelHandle,
}

struct State {
    /// Stream ids with a pending job, in arrival order (workers pick by
    /// [`schedule::next`]).
    queue: VecDeque<u64>,
    slots: HashMap<u64, Slot>,
    next_id: u64,
    busy_workers: usize,
    closed: bool,
    /// Decodes finished lately, for admission and the load gauges.
    load: LoadWindow,
}

impl State {
    /// Removes and returns the stream id a free worker should serve next.
    fn pick(&mut self, now: Instant) -> Option<u64> {
        let slots = &self.slots;
        // Withdraw and drop keep the queue clean; this only guards the invariant.
        self.queue
            .retain(|id| slots.get(id).is_some_and(|slot| slot.pending.is_some()));
        let waiting = self.queue.iter().filter_map(|id| {
            let slot = slots.get(id)?;
            Some((slot.pending.as_ref()?.job.priority, slot.queued_since))
        });
        let index = schedule::next(waiting, now, schedule::PARTIAL_AGING)?;
        self.queue.remove(index)
    }

    /// How long the job queued longest has waited (zero when none waits).
    fn oldest_waiting(&self, now: Instant) -> Duration {
        self.queue
            .iter()
            .filter_map(|id| self.slots.get(id))
            .filter(|slot| slot.pending.is_some())
            .map(|slot| now.saturating_duration_since(slot.queued_since))
            .max()
            .unwrap_or_default()
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    limits: PoolLimits,
    completed: AtomicU64,
    refused: AtomicU64,
    cancelled: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counters and gauges of a pool (a snapshot).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolStats {
    /// Streams admitted and not yet finished.
    pub active_streams: usize,
    /// Jobs waiting for a worker.
    pub queued_jobs: usize,
    /// Workers decoding now.
    pub busy_workers: usize,
    /// Decodes finished (any outcome).
    pub completed_jobs: u64,
    /// Streams refused by admission control.
    pub refused_streams: u64,
    /// Streams that ended with a decode still queued or running.
    pub cancelled_streams: u64,
    /// Decodes and waits over the last 10 s.
    pub load: Load,
}

/// Why [`EnginePool::admit`] refused a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// `limit` streams are open already. Retry later.
    #[error("{limit} concurrent streams are open (the server's limit)")]
    TooManyStreams {
        /// The stream limit.
        limit: usize,
    },
    /// `depth` decodes already wait for a worker. Retry later.
    #[error("{depth} decodes are waiting for a worker (the server's queue limit)")]
    QueueFull {
        /// The queue limit.
        depth: usize,
    },
    /// Decodes already come back too late ([`AdmissionRule`]). Retry later.
    #[error("{0}")]
    Behind(String),
    /// The pool is shutting down.
    #[error("the engine pool is shut down")]
    Closed,
}

/// The pool of inference workers. Dropping it (or [`EnginePool::shutdown`]) stops the
/// workers after their current decode.
pub struct EnginePool {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl EnginePool {
    /// Starts `limits.workers` threads; each creates one decoder per model from `factories`
    /// before this returns. Blocking: call it from a blocking context.
    ///
    /// # Errors
    /// The first decoder that could not be created.
    pub fn start(
        factories: Vec<Arc<dyn DecoderFactory>>,
        limits: PoolLimits,
    ) -> Result<Self, String> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                slots: HashMap::new(),
                next_id: 0,
                busy_workers: 0,
                closed: false,
                load: LoadWindow::new(schedule::LOAD_WINDOW, limits.workers),
            }),
            wake: Condvar::new(),
            limits,
            completed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        });
        let mut workers = Vec::with_capacity(limits.workers);
        let pool = Self {
            shared: shared.clone(),
            workers: Mutex::new(Vec::new()),
        };
        for index in 0..limits.workers.max(1) {
            let decoders = factories
                .iter()
                .map(|f| f.create())
                .collect::<Result<Vec<_>, _>>()?;
            let worker = Worker {
                shared: shared.clone(),
                factories: factories.clone(),
                decoders,
            };
            let handle = std::thread::Builder::new()
                .name(format!("transcribe-worker-{index}"))
                .spawn(move || worker.run())
                .map_err(|e| format!("spawning worker thread: {e}"))?;
            workers.push(handle);
        }
        *pool.workers.lock().unwrap_or_else(PoisonError::into_inner) = workers;
        Ok(pool)
    }

    /// Admits a new stream, or says which limit refuses it.
    ///
    /// # Errors
    /// [`AdmitError`] when the stream or queue limit is reached or the pool is closed.
    pub fn admit(&self) -> Result<StreamLease, AdmitError> {
        let limits = self.shared.limits;
        let mut state = self.shared.lock();
        let refusal = if state.closed {
            Some(AdmitError::Closed)
        } else if state.slots.len() >= limits.max_streams {
            Some(AdmitError::TooManyStreams {
                limit: limits.max_streams,
            })
        } else if state.queue.len() >= limits.queue_depth {
            Some(AdmitError::QueueFull {
                depth: limits.queue_depth,
            })
        } else {
            let now = Instant::now();
            let rule = AdmissionRule {
                max_wait: limits.admission_wait,
                min_decodes: schedule::MIN_DECODES_FOR_ADMISSION,
            };
            let oldest = state.oldest_waiting(now);
            let load = state.load.load(now);
            rule.refuses(&load, oldest).map(AdmitError::Behind)
        };
        if let Some(refusal) = refusal {
            drop(state);
            self.shared.refused.fetch_add(1, Ordering::Relaxed);
            return Err(refusal);
        }
        let id = state.next_id;
        state.next_id += 1;
        let cancel = CancelHandle::default();
        state.slots.insert(
            id,
            Slot {
                pending: None,
                queued: false,
                queued_since: Instant::now(),
                running: false,
                cancel: cancel.clone(),
            },
        );
        Ok(StreamLease {
            shared: self.shared.clone(),
            id,
            cancel,
        })
    }

    /// A snapshot of the pool's gauges and counters.
    pub fn stats(&self) -> PoolStats {
        let mut state = self.shared.lock();
        let load = state.load.load(Instant::now());
        PoolStats {
            active_streams: state.slots.len(),
            queued_jobs: state.queue.len(),
            busy_workers: state.busy_workers,
            completed_jobs: self.shared.completed.load(Ordering::Relaxed),
            refused_streams: self.shared.refused.load(Ordering::Relaxed),
            cancelled_streams: self.shared.cancelled.load(Ordering::Relaxed),
            load,
        }
    }

    /// Refuses new streams, cancels queued and running decodes, and waits for the workers
    /// to exit. Blocking: call it from a blocking context.
    pub fn shutdown(&self) {
        self.close();
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        for handle in workers {
            if handle.join().is_err() {
                tracing::error!(message = "Inference worker panicked outside a decode.");
            }
        }
    }

    fn close(&self) {
        let mut state = self.shared.lock();
        state.closed = true;
        for slot in state.slots.values_mut() {
            slot.cancel.cancel();
            slot.pending = None;
            slot.queued = false;
        }
        state.queue.clear();
        drop(state);
        self.shared.wake.notify_all();
    }
}

impl Drop for EnginePool {
    fn drop(&mut self) {
        // Workers hold their own Arc; tell them to stop. They are not joined here (a drop
        // must not block); `shutdown` joins.
        self.close();
    }
}

/// An admitted stream's handle on the pool. Dropping it frees the slot and cancels the
/// stream's queued or running decode.
pub struct StreamLease {
    shared: Arc<Shared>,
    id: u64,
    cancel: CancelHandle,
}

impl std::fmt::Debug for StreamLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamLease").field("id", &self.id).finish()
    }
}

/// The result of [`StreamLease::submit`].
#[derive(Debug)]
pub struct Submitted {
    /// Where the job's output will arrive. Its sender is dropped without a value when the
    /// job is replaced by a newer one or the pool shuts down.
    pub output: oneshot::Receiver<JobOutput>,
    /// The stale job this one replaced (it was still queued and will not run).
    pub replaced: Option<Job>,
}

impl StreamLease {
    /// Queues `job` for this stream, replacing the stream's previous job if that one has not
    /// started yet. Never blocks and never fails: each admitted stream owns one queue place.
    pub fn submit(&self, job: Job) -> Submitted {
        let (reply, output) = oneshot::channel();
        let pending = Pending {
            job,
            reply,
            submitted: Instant::now(),
        };
        let mut state = self.shared.lock();
        let closed = state.closed;
        let Some(slot) = state.slots.get_mut(&self.id) else {
            // The pool was shut down and dropped our slot: the receiver sees a closed channel.
            return Submitted {
                output,
                replaced: None,
            };
        };
        if closed {
            return Submitted {
                output,
                replaced: None,
            };
        }
        let replaced = slot.pending.replace(pending).map(|p| p.job);
        let enqueue = !slot.queued && !slot.running;
        if enqueue {
            slot.queued = true;
            slot.queued_since = Instant::now();
            state.queue.push_back(self.id);
        }
        drop(state);
        if enqueue {
            self.shared.wake.notify_one();
        }
        Submitted { output, replaced }
    }

    /// Takes back this stream's job if no worker has started it yet (it will not run and
    /// its output channel closes).
    pub fn withdraw(&self) -> Option<Job> {
        let mut state = self.shared.lock();
        let slot = state.slots.get_mut(&self.id)?;
        let pending = slot.pending.take()?;
        if slot.queued {
            slot.queued = false;
            state.queue.retain(|id| *id != self.id);
        }
        Some(pending.job)
    }

    /// This stream's cancellation handle (set when the lease is dropped).
    pub fn cancel_handle(&self) -> &CancelHandle {
        &self.cancel
    }
}

impl Drop for StreamLease {
    fn drop(&mut self) {
        self.cancel.cancel();
        let mut state = self.shared.lock();
        if let Some(slot) = state.slots.remove(&self.id) {
            if slot.queued {
                state.queue.retain(|id| *id != self.id);
            }
            if slot.running || slot.pending.is_some() {
                self.shared.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One worker thread's state.
struct Worker {
    shared: Arc<Shared>,
    factories: Vec<Arc<dyn DecoderFactory>>,
    decoders: Vec<Box<dyn Decoder>>,
}

impl Worker {
    fn run(mut self) {
        while let Some((id, pending, cancel)) = self.next_job() {
            let Pending {
                job,
                reply,
                submitted,
            } = pending;
            let queued = submitted.elapsed();
            let started = Instant::now();
            let samples = job.samples.len();
            let result = self.decode(&job, &cancel);
            let inference = started.elapsed();
            self.shared.completed.fetch_add(1, Ordering::Relaxed);
            self.shared
                .lock()
                .load
                .record(Instant::now(), job.priority, queued, inference);
            // A failed send means the stream is gone; nothing to do.
            let _ = reply.send(JobOutput {
                tag: job.tag,
                result,
                queued,
                inference,
                samples,
            });
            self.finish_job(id);
        }
    }

    /// Waits for the next job; `None` when the pool is closed.
    fn next_job(&self) -> Option<(u64, Pending, CancelHandle)> {
        let mut state = self.shared.lock();
        loop {
            if state.closed {
                return None;
            }
            while let Some(id) = state.pick(Instant::now()) {
                let Some(slot) = state.slots.get_mut(&id) else {
                    continue;
                };
                slot.queued = false;
                let Some(pending) = slot.pending.take() else {
                    continue;
                };
                slot.running = true;
                let cancel = slot.cancel.clone();
                state.busy_workers += 1;
                return Some((id, pending, cancel));
            }
            state = self
                .shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Marks the stream's job done and queues the job that arrived meanwhile, if any.
    fn finish_job(&self, id: u64) {
        let mut state = self.shared.lock();
        state.busy_workers = state.busy_workers.saturating_sub(1);
        let mut requeue = false;
        if let Some(slot) = state.slots.get_mut(&id) {
            slot.running = false;
            if slot.pending.is_some() && !slot.queued {
                slot.queued = true;
                requeue = true;
            }
        }
        if requeue {
            if let Some(slot) = state.slots.get_mut(&id) {
                slot.queued_since = Instant::now();
            }
            state.queue.push_back(id);
            drop(state);
            self.shared.wake.notify_one();
        }
    }

    fn decode(&mut self, job: &Job, cancel: &CancelHandle) -> Result<Transcript, EngineError> {
        let Some(decoder) = self.decoders.get_mut(job.model) else {
            return Err(EngineError::Inference(format!(
                "no model with index {}",
                job.model
            )));
        };
        if cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        match catch_unwind(AssertUnwindSafe(|| {
            decoder.decode(&job.samples, &job.options, cancel)
        })) {
            Ok(result) => result,
            Err(_) => {
                tracing::error!(
                    message = "Decoder panicked; rebuilding it.",
                    model = job.model
                );
                match self.factories[job.model].create() {
                    Ok(fresh) => self.decoders[job.model] = fresh,
                    Err(error) => {
                        tracing::error!(message = "Cannot rebuild decoder.", %error);
                    }
                }
                Err(EngineError::Inference("the decoder panicked".into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A decoder that reports each call and waits for a go signal (or cancellation).
    struct Gate {
        started: mpsc::Sender<u64>,
        go: Arc<Mutex<mpsc::Receiver<()>>>,
    }

    impl Decoder for Gate {
        fn decode(
            &mut self,
            samples: &[f32],
            _: &DecodeOptions,
            cancel: &CancelHandle,
        ) -> Result<Transcript, EngineError> {
            let _ = self.started.send(samples.len() as u64);
            let go = self.go.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if cancel.is_cancelled() {
                    return Err(EngineError::Cancelled);
                }
                if go.recv_timeout(Duration::from_millis(5)).is_ok() {
                    break;
                }
            }
            if samples.first() == Some(&-1.0) {
                panic!("scripted panic");
            }
            Ok(Transcript::default())
        }
    }

    fn gate_pool(
        limits: PoolLimits,
    ) -> Result<(EnginePool, mpsc::Receiver<u64>, mpsc::Sender<()>), String> {
        let (started_tx, started) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let go_rx = Arc::new(Mutex::new(go_rx));
        let factory = move || -> Result<Box<dyn Decoder>, String> {
            Ok(Box::new(Gate {
                started: started_tx.clone(),
                go: go_rx.clone(),
            }))
        };
        let factory: Arc<dyn DecoderFactory> = Arc::new(factory);
        Ok((EnginePool::start(vec![factory], limits)?, started, go))
    }

    fn job(len: usize, tag: u64) -> Job {
        Job {
            model: 0,
            samples: vec![0.0; len],
            options: DecodeOptions::default(),
            priority: Priority::Partial,
            tag,
        }
    }

    const ONE: PoolLimits = PoolLimits {
        workers: 1,
        max_streams: 2,
        queue_depth: 1,
        admission_wait: Duration::ZERO,
    };

    #[test]
    fn admission_limits_streams_and_queue() -> Result<(), Box<dyn std::error::Error>> {
        let limits = PoolLimits {
            workers: 1,
            max_streams: 3,
            queue_depth: 1,
            admission_wait: Duration::ZERO,
        };
        let (pool, started, go) = gate_pool(limits)?;
        let a = pool.admit()?;
        let b = pool.admit()?;
        let c = pool.admit()?;
        assert_eq!(
            pool.admit().err(),
            Some(AdmitError::TooManyStreams { limit: 3 })
        );
        drop(c);
        let _ra = a.submit(job(1, 1));
        started.recv_timeout(Duration::from_secs(5))?; // a is running
        let _rb = b.submit(job(2, 2)); // b waits in the queue
        // One stream slot is free, but one job (= depth) waits: the queue limit refuses.
        assert_eq!(pool.admit().err(), Some(AdmitError::QueueFull { depth: 1 }));
        go.send(())?;
        assert_eq!(pool.stats().refused_streams, 2);
        pool.shutdown();
        Ok(())
    }

    #[test]
    fn newer_job_replaces_a_stale_queued_one() -> Result<(), Box<dyn std::error::Error>> {
        let limits = PoolLimits {
            workers: 1,
            max_streams: 4,
            queue_depth: 4,
            admission_wait: Duration::ZERO,
        };
        let (pool, started, go) = gate_pool(limits)?;
        let busy = pool.admit()?;
        let _busy_rx = busy.submit(job(10, 0));
        assert_eq!(started.recv_timeout(Duration::from_secs(5))?, 10);
        let s = pool.admit()?;
        let first = s.submit(job(20, 1));
        let second = s.submit(job(30, 2));
        assert_eq!(second.replaced.map(|j| j.tag), Some(1));
        go.send(())?; // finish `busy`
        assert_eq!(started.recv_timeout(Duration::from_secs(5))?, 30);
        go.send(())?;
        let out = second.output.blocking_recv()?;
        assert_eq!((out.tag, out.samples), (2, 30));
        assert!(
            first.output.blocking_recv().is_err(),
            "the replaced job never answers"
        );
        pool.shutdown();
        Ok(())
    }

    #[test]
    fn dropping_the_lease_cancels_the_running_decode() -> Result<(), Box<dyn std::error::Error>> {
        let (pool, started, _go) = gate_pool(ONE)?;
        let s = pool.admit()?;
        let sub = s.submit(job(5, 7));
        started.recv_timeout(Duration::from_secs(5))?;
        drop(s);
        let out = sub.output.blocking_recv()?;
        assert!(matches!(out.result, Err(EngineError::Cancelled)));
        let stats = pool.stats();
        assert_eq!((stats.active_streams, stats.cancelled_streams), (0, 1));
        pool.shutdown();
        Ok(())
    }

    #[test]
    fn a_panicking_decode_fails_only_its_job() -> Result<(), Box<dyn std::error::Error>> {
        let (pool, started, go) = gate_pool(ONE)?;
        let s = pool.admit()?;
        let mut bad = job(3, 1);
        bad.samples[0] = -1.0;
        let sub = s.submit(bad);
        started.recv_timeout(Duration::from_secs(5))?;
        go.send(())?;
        assert!(matches!(
            sub.output.blocking_recv()?.result,
            Err(EngineError::Inference(_))
        ));
        let sub = s.submit(job(4, 2));
        started.recv_timeout(Duration::from_secs(5))?;
        go.send(())?;
        assert!(sub.output.blocking_recv()?.result.is_ok());
        pool.shutdown();
        Ok(())
    }

    #[test]
    fn a_final_runs_before_an_older_partial() -> Result<(), Box<dyn std::error::Error>> {
        let (pool, started, go) = gate_pool(PoolLimits {
            workers: 1,
            max_streams: 3,
            queue_depth: 3,
            admission_wait: Duration::ZERO,
        })?;
        let busy = pool.admit()?;
        let _busy = busy.submit(job(1, 0));
        started.recv_timeout(Duration::from_secs(5))?;
        let p = pool.admit()?;
        let _partial = p.submit(job(2, 1));
        let f = pool.admit()?;
        let mut last = job(3, 2);
        last.priority = Priority::Final;
        let _final = f.submit(last);
        go.send(())?;
        assert_eq!(
            started.recv_timeout(Duration::from_secs(5))?,
            3,
            "the final"
        );
        go.send(())?;
        assert_eq!(
            started.recv_timeout(Duration::from_secs(5))?,
            2,
            "then the partial"
        );
        go.send(())?;
        pool.shutdown();
        Ok(())
    }

    #[test]
    fn a_stream_is_refused_while_a_decode_waits_too_long() -> Result<(), Box<dyn std::error::Error>>
    {
        let (pool, started, go) = gate_pool(PoolLimits {
            workers: 1,
            max_streams: 4,
            queue_depth: 4,
            admission_wait: Duration::from_millis(50),
        })?;
        let busy = pool.admit()?;
        let _busy = busy.submit(job(1, 0));
        started.recv_timeout(Duration::from_secs(5))?;
        let waiting = pool.admit()?;
        let _waiting = waiting.submit(job(2, 1));
        std::thread::sleep(Duration::from_millis(80));
        assert!(matches!(pool.admit(), Err(AdmitError::Behind(_))));
        go.send(())?;
        started.recv_timeout(Duration::from_secs(5))?;
        go.send(())?;
        // Nothing waits now, and two decodes are too few for the percentile rule.
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.stats().busy_workers > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(pool.admit().is_ok());
        assert_eq!(pool.stats().load.decodes, 2);
        pool.shutdown();
        Ok(())
    }

    #[test]
    fn a_queued_job_can_be_withdrawn() -> Result<(), Box<dyn std::error::Error>> {
        let (pool, started, go) = gate_pool(PoolLimits {
            workers: 1,
            max_streams: 2,
            queue_depth: 2,
            admission_wait: Duration::ZERO,
        })?;
        let busy = pool.admit()?;
        let _busy = busy.submit(job(1, 0));
        started.recv_timeout(Duration::from_secs(5))?;
        let s = pool.admit()?;
        let sub = s.submit(job(2, 9));
        assert_eq!(pool.stats().queued_jobs, 1);
        assert_eq!(s.withdraw().map(|j| j.tag), Some(9));
        assert_eq!(pool.stats().queued_jobs, 0);
        assert!(s.withdraw().is_none());
        go.send(())?;
        assert!(sub.output.blocking_recv().is_err());
        pool.shutdown();
        Ok(())
    }
}
