//! A synchronous driver of the [`StreamingPolicy`]: feeds audio in chunks and runs its
//! jobs on a [`Transcriber`] inline. For tests, and for offline "streaming WER" and latency
//! benchmarks: the whole stream runs as fast as the engine allows, with every event stamped
//! on the sample clock.
//!
//! With [`run_stream`] the engine is instant (a result arrives before the next chunk).
//! [`run_stream_timed`] takes a cost model instead: a job's result is handed back only
//! once that many more samples have been pushed, as if decoding took that long in real
//! time, which exercises step widening.
//!
//! # Example
//! ```
//! use transcribe_core::fake::{Script, ScriptedTranscriber};
//! use transcribe_core::policy::{PolicyConfig, PolicyEvent};
//! use transcribe_core::stream::run_stream;
//! let script = Script::from_phrases(&[(1.0, "hello there general kenobi")], 0.4, 0.1)?;
//! let audio = script.render(4.0);
//! let mut fake = ScriptedTranscriber::new(script, &audio);
//! let events = run_stream(&mut fake, &audio, 1_600, PolicyConfig::default())?;
//! let finals: Vec<String> = events
//!     .iter()
//!     .filter_map(|e| match e {
//!         PolicyEvent::Final { text, .. } => Some(text.clone()),
//!         _ => None,
//!     })
//!     .collect();
//! assert_eq!(finals, ["hello there general kenobi"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::{DecodeJob, JobKind, PolicyConfig, PolicyEvent, StreamingPolicy};
use crate::engine::Transcriber;
use crate::vad::ConfigError;

/// An event and the sample clock when the policy emitted it.
#[derive(Clone, Debug, PartialEq)]
pub struct TimedEvent {
    /// Samples pushed when it was emitted.
    pub at_samples: u64,
    /// The event.
    pub event: PolicyEvent,
}

/// One job as it ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    /// The job's id.
    pub id: u64,
    /// Partial or final.
    pub kind: JobKind,
    /// Its utterance.
    pub utterance_index: u64,
    /// Absolute start of its audio.
    pub offset_samples: u64,
    /// Length of its audio.
    pub len_samples: usize,
    /// Its `audio_ctx`, if set.
    pub audio_ctx: Option<u32>,
    /// Sample clock when it was polled.
    pub polled_at: u64,
    /// Sample clock when its result was handed back.
    pub done_at: u64,
}

/// Everything a run produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamRun {
    /// Events in order, stamped.
    pub events: Vec<TimedEvent>,
    /// Jobs in order.
    pub jobs: Vec<JobRecord>,
}

impl StreamRun {
    /// The events without stamps.
    pub fn plain_events(&self) -> Vec<PolicyEvent> {
        self.events.iter().map(|e| e.event.clone()).collect()
    }
}

/// Streams `samples` through a policy in chunks of `chunk_samples`, running each job on
/// `transcriber` at once; then ends the stream and flushes its finals.
///
/// # Errors
/// [`ConfigError`] when `config` is invalid or `chunk_samples` is 0.
pub fn run_stream(
    transcriber: &mut dyn Transcriber,
    samples: &[f32],
    chunk_samples: usize,
    config: PolicyConfig,
) -> Result<Vec<PolicyEvent>, ConfigError> {
    Ok(run_stream_timed(transcriber, samples, chunk_samples, config, &mut |_| 0)?.plain_events())
}

/// As [`run_stream`], with a decode cost: `cost(job)` samples must be pushed after a job
/// is polled before its result is handed back (0: at once). After the audio ends, results
/// come back at once.
///
/// # Errors
/// [`ConfigError`] when `config` is invalid or `chunk_samples` is 0.
pub fn run_stream_timed(
    transcriber: &mut dyn Transcriber,
    samples: &[f32],
    chunk_samples: usize,
    config: PolicyConfig,
    cost: &mut dyn FnMut(&DecodeJob) -> u64,
) -> Result<StreamRun, ConfigError> {
    if chunk_samples == 0 {
        return Err(ConfigError::OutOfRange {
            field: "chunk_samples",
            value: 0.0,
            min: 1.0,
            max: f64::from(u32::MAX),
        });
    }
    let mut policy = StreamingPolicy::new(config)?;
    let mut run = StreamRun::default();
    let mut pending: Option<(DecodeJob, u64)> = None;
    for chunk in samples.chunks(chunk_samples) {
        let events = policy.push_audio(chunk);
        record(&mut run, policy.clock(), events);
        drive(
            &mut policy,
            transcriber,
            &mut pending,
            cost,
            &mut run,
            false,
        );
    }
    let events = policy.end_of_stream();
    record(&mut run, policy.clock(), events);
    drive(&mut policy, transcriber, &mut pending, cost, &mut run, true);
    Ok(run)
}

fn record(run: &mut StreamRun, at: u64, events: Vec<PolicyEvent>) {
    run.events
        .extend(events.into_iter().map(|event| TimedEvent {
            at_samples: at,
            event,
        }));
}

/// Hands back due results and starts due jobs until nothing more can happen now.
fn drive(
    policy: &mut StreamingPolicy,
    transcriber: &mut dyn Transcriber,
    pending: &mut Option<(DecodeJob, u64)>,
    cost: &mut dyn FnMut(&DecodeJob) -> u64,
    run: &mut StreamRun,
    flush: bool,
) {
    loop {
        if let Some((job, due)) = pending.take() {
            if !flush && policy.clock() < due {
                *pending = Some((job, due));
                return;
            }
            let result = transcriber.transcribe(&job.samples, &job.options);
            let now = policy.clock();
            if let Some(r) = run.jobs.iter_mut().rev().find(|r| r.id == job.id) {
                r.done_at = now;
            }
            let events = policy.on_result(job.id, result);
            record(run, now, events);
        }
        let Some(job) = policy.poll_job() else {
            return;
        };
        let now = policy.clock();
        run.jobs.push(JobRecord {
            id: job.id,
            kind: job.kind,
            utterance_index: job.utterance_index,
            offset_samples: job.offset_samples,
            len_samples: job.samples.len(),
            audio_ctx: job.options.audio_ctx,
            polled_at: now,
            done_at: now,
        });
        let due = now + cost(&job);
        *pending = Some((job, due));
    }
}
