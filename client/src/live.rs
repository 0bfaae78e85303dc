//! A live driver of the streaming policy: audio arrives from any thread through a
//! [`LiveSender`]; decodes run on a dedicated inference thread; [`PolicyEvent`]s are handed
//! to the caller in order. Used by `transcribe --mic`; any live source (a file looped in real
//! time, a server-side microphone) can use it the same way.
//!
//! Threads and channels (STYLE.md, "Three execution domains"; "Backpressure"):
//! - the caller's thread runs [`run`]: it owns the [`StreamingPolicy`] and forwards events;
//! - the input channel ([`INPUT_CAPACITY`] messages) carries audio, finalize and end
//!   requests; full-policy: senders block (a capture's ring then absorbs, and counts, the
//!   overflow);
//! - one inference thread owns the [`Transcriber`]; its job channel holds one job, and the
//!   policy never has more than one in flight, so dispatching never blocks; results come
//!   back on an unbounded channel that holds at most that one result.

use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, sync_channel};
use std::time::Duration;

use transcribe_core::policy::{DecodeJob, PolicyConfig, PolicyEvent, StreamingPolicy};
use transcribe_core::vad::ConfigError;
use transcribe_core::{EngineError, Transcriber, Transcript};

/// Messages the input channel holds: about 0.64 s of 10 ms capture chunks. Full-policy: the
/// sender blocks.
pub const INPUT_CAPACITY: usize = 64;

/// How long the driver waits for input before it looks for a decode result again while a
/// job is in flight: 5 ms (a fraction of any decode; adds at most that to result latency).
const RESULT_POLL: Duration = Duration::from_millis(5);

enum Input {
    Audio(Vec<f32>),
    #[allow(dead_code, reason = "sent by LiveSender::finalize")]
    Finalize,
    End,
    Failed(String),
}

/// The sending side of a live stream. Cloneable; every method returns `false` once the
/// driver has stopped.
#[derive(Clone, Debug)]
pub struct LiveSender(SyncSender<Input>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Audio(a) => write!(f, "Audio({} samples)", a.len()),
            Input::Finalize => f.write_str("Finalize"),
            Input::End => f.write_str("End"),
            Input::Failed(m) => write!(f, "Failed({m:?})"),
        }
    }
}

impl LiveSender {
    /// Sends 16 kHz mono samples (blocks while the input channel is full).
    pub fn audio(&self, samples: Vec<f32>) -> bool {
        self.0.send(Input::Audio(samples)).is_ok()
    }

    /// Closes the open utterance now (its final follows).
    #[allow(
        dead_code,
        reason = "for live sources with an explicit end of utterance; --mic has none"
    )]
    pub fn finalize(&self) -> bool {
        self.0.send(Input::Finalize).is_ok()
    }

    /// Ends the stream: the open utterance is finalized, then [`run`] returns.
    pub fn end(&self) -> bool {
        self.0.send(Input::End).is_ok()
    }

    /// Ends the stream because the source failed: the open utterance is finalized, then
    /// [`run`] returns [`LiveError::Source`] with `message`.
    pub fn fail(&self, message: impl Into<String>) -> bool {
        self.0.send(Input::Failed(message.into())).is_ok()
    }
}

/// The receiving side, passed to [`run`].
#[derive(Debug)]
pub struct LiveReceiver(Receiver<Input>);

/// A new live stream's channel ([`INPUT_CAPACITY`]).
pub fn channel() -> (LiveSender, LiveReceiver) {
    let (tx, rx) = sync_channel(INPUT_CAPACITY);
    (LiveSender(tx), LiveReceiver(rx))
}

/// Why a live stream stopped early.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The policy configuration is invalid (a programming or flag error).
    #[error("invalid streaming configuration: {0}")]
    Config(#[from] ConfigError),
    /// A decode failed for a reason other than cancellation; the stream cannot go on.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// The inference thread stopped (it panicked or could not start).
    #[error("the inference thread stopped unexpectedly")]
    Worker,
    /// The audio source failed (e.g. the microphone was unplugged); the open utterance was
    /// finalized first.
    #[error("{0}")]
    Source(String),
    /// The event sink failed (e.g. stdout closed).
    #[error(transparent)]
    Sink(#[from] std::io::Error),
}

/// What a finished stream did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveSummary {
    /// 16 kHz samples pushed.
    pub samples: u64,
    /// Decodes run.
    pub jobs: u64,
    /// Finals emitted.
    pub finals: u64,
}

/// Runs a live stream until its sender ends it (or every sender is dropped): audio from `rx`
/// through a [`StreamingPolicy`] built from `config`, decodes on a new inference thread
/// with `transcriber`, every event handed to `on_event` in order.
///
/// # Errors
/// [`LiveError`]: invalid config, a failed decode, a failed source (after the open
/// utterance's final), or `on_event`'s error.
pub fn run<T: Transcriber + 'static>(
    transcriber: T,
    config: PolicyConfig,
    rx: LiveReceiver,
    mut on_event: impl FnMut(&PolicyEvent) -> std::io::Result<()>,
) -> Result<LiveSummary, LiveError> {
    let mut policy = StreamingPolicy::new(config)?;
    let (job_tx, job_rx) = sync_channel::<DecodeJob>(1);
    let (result_tx, result_rx) = std::sync::mpsc::channel();
    let worker = std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || inference(transcriber, &job_rx, &result_tx))
        .map_err(|_| LiveError::Worker)?;
    let mut summary = LiveSummary::default();
    let mut ended = false;
    let mut source_error: Option<String> = None;
    let mut forward = |events: Vec<PolicyEvent>, summary: &mut LiveSummary| {
        for event in &events {
            match event {
                PolicyEvent::Final { .. } => summary.finals += 1,
                PolicyEvent::DecodeFailed {
                    failure, message, ..
                } if *failure != transcribe_core::policy::FailureKind::Cancelled => {
                    return Err(LiveError::Decode(message.clone()));
                }
                _ => {}
            }
            on_event(event)?;
        }
        Ok(())
    };
    let result = loop {
        // Results first: they free the policy to dispatch the next job.
        match result_rx.try_recv() {
            Ok((id, result)) => {
                if let Err(e) = forward(policy.on_result(id, result), &mut summary) {
                    break Err(e);
                }
                continue;
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => break Err(LiveError::Worker),
        }
        if let Some(job) = policy.poll_job() {
            summary.jobs += 1;
            if job_tx.send(job).is_err() {
                break Err(LiveError::Worker);
            }
        }
        if ended {
            if policy.is_done() {
                break Ok(());
            }
            // Only results can change anything now.
            match result_rx.recv() {
                Ok((id, result)) => {
                    if let Err(e) = forward(policy.on_result(id, result), &mut summary) {
                        break Err(e);
                    }
                }
                Err(_) => break Err(LiveError::Worker),
            }
            continue;
        }
        let input = if policy.has_job_in_flight() {
            match rx.0.recv_timeout(RESULT_POLL) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Input::End),
            }
        } else {
            Some(rx.0.recv().unwrap_or(Input::End))
        };
        let events = match input {
            None => continue,
            Some(Input::Audio(samples)) => {
                summary.samples += samples.len() as u64;
                policy.push_audio(&samples)
            }
            Some(Input::Finalize) => policy.finalize(),
            Some(Input::End) => {
                ended = true;
                policy.end_of_stream()
            }
            Some(Input::Failed(message)) => {
                ended = true;
                source_error = Some(message);
                policy.end_of_stream()
            }
        };
        if let Err(e) = forward(events, &mut summary) {
            break Err(e);
        }
    };
    drop(job_tx);
    let worker_ok = worker.join().is_ok();
    result?;
    if !worker_ok {
        return Err(LiveError::Worker);
    }
    match source_error {
        Some(message) => Err(LiveError::Source(message)),
        None => Ok(summary),
    }
}

type JobResult = (u64, Result<Transcript, EngineError>);

/// The inference thread: one job at a time until the job channel closes.
fn inference<T: Transcriber>(
    mut transcriber: T,
    jobs: &Receiver<DecodeJob>,
    results: &std::sync::mpsc::Sender<JobResult>,
) {
    while let Ok(job) = jobs.recv() {
        let result = transcriber.transcribe(&job.samples, &job.options);
        if results.send((job.id, result)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transcribe_core::fake::{Script, ScriptedTranscriber};

    #[test]
    fn live_stream_matches_the_synchronous_driver() -> Result<(), Box<dyn std::error::Error>> {
        let script = Script::from_phrases(
            &[
                (1.0, "hello there general kenobi"),
                (5.0, "you are a bold one"),
            ],
            0.4,
            0.1,
        )?;
        let audio = script.render(9.0);
        let (tx, rx) = channel();
        let chunks: Vec<Vec<f32>> = audio.chunks(160).map(<[f32]>::to_vec).collect();
        let feeder = std::thread::spawn(move || {
            for c in chunks {
                if !tx.audio(c) {
                    return;
                }
            }
            tx.end();
        });
        let mut finals = Vec::new();
        let summary = run(
            ScriptedTranscriber::new(script, &audio),
            PolicyConfig::default(),
            rx,
            |e| {
                if let PolicyEvent::Final { text, .. } = e {
                    finals.push(text.clone());
                }
                Ok(())
            },
        )?;
        feeder.join().map_err(|_| "feeder panicked")?;
        assert_eq!(finals, ["hello there general kenobi", "you are a bold one"]);
        assert_eq!(summary.finals, 2);
        assert_eq!(summary.samples, audio.len() as u64);
        Ok(())
    }

    #[test]
    fn end_mid_utterance_finalizes_it_and_a_failed_source_is_reported()
    -> Result<(), Box<dyn std::error::Error>> {
        let script = Script::from_phrases(&[(0.5, "one two three four five six")], 0.5, 0.1)?;
        let audio = script.render(6.0);
        // Stop 2 s in: the phrase has started but not ended.
        let cut = 32_000;
        let (tx, rx) = channel();
        let head = audio[..cut].to_vec();
        let feeder = std::thread::spawn(move || {
            tx.audio(head);
            tx.fail("device unplugged");
        });
        let mut finals = Vec::new();
        let result = run(
            ScriptedTranscriber::new(script, &audio),
            PolicyConfig::default(),
            rx,
            |e| {
                if let PolicyEvent::Final { text, .. } = e {
                    finals.push(text.clone());
                }
                Ok(())
            },
        );
        feeder.join().map_err(|_| "feeder panicked")?;
        assert!(matches!(result, Err(LiveError::Source(m)) if m == "device unplugged"));
        assert_eq!(finals.len(), 1, "{finals:?}");
        assert!(finals[0].starts_with("one two"), "{finals:?}");
        Ok(())
    }
}
