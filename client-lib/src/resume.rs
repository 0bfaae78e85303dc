//! The pure pieces of a stream that survives its server: which failures to retry and when
//! ([`RetryPolicy`], [`Backoff`], [`verdict`]), the audio kept until a final covers it
//! ([`Tape`]), and the seam between one attempt and the next ([`Seam`]: where to resume,
//! utterance indices continued, no final shown twice).
//!
//! How a resumed stream stays one stream: the server reports in every response's
//! `progress.final_offset` the point before which nothing will change. The client keeps the
//! audio from there on; when the call fails it opens a new one with `stream_start_offset`
//! set to that point and sends the kept audio again, so every time the new server reports
//! is on the original clock and every word after the point is heard once. Finals already
//! shown end at or before the point, so none is repeated.
//!
//! Nothing here does I/O; the driver is `stream_audio` in the crate root.

use std::collections::VecDeque;
use std::time::Duration;

use tonic::Code;
use tonic_types::StatusExt;

/// How long a stream may keep failing before the client gives up, by default.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(30);
/// The first wait after a failure.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// `ErrorInfo` reason of OUT_OF_RANGE when a stream reached the server's maximum duration;
/// the API says to reconnect with `stream_start_offset` to continue.
pub const STREAM_DURATION_EXCEEDED: &str = "STREAM_DURATION_EXCEEDED";

/// When to retry a failed stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Give up when the stream has failed without a response in between for this long.
    pub give_up_after: Duration,
    /// The first wait; each failure in a row doubles it (with jitter).
    pub first_backoff: Duration,
    /// The longest wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            give_up_after: DEFAULT_GIVE_UP_AFTER,
            first_backoff: FIRST_BACKOFF,
            max_backoff: MAX_BACKOFF,
        }
    }
}

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The server or the path to it went away, or is full: wait (at least `hint`, the
    /// server's RetryInfo) and resume.
    Retry {
        /// The server's `RetryInfo.retry_delay`, if it sent one.
        hint: Option<Duration>,
    },
    /// The stream hit the server's length limit: resume at once.
    Continue,
    /// The request itself is wrong (or the server failed on it): retrying cannot help.
    Fail,
}

/// Whether `status` is worth retrying.
///
/// - UNAVAILABLE (draining, loading, a balancer without a healthy backend) and
///   RESOURCE_EXHAUSTED (too many streams, queue full, a subscriber too slow): retry, after
///   the server's RetryInfo if any.
/// - INTERNAL, UNKNOWN or CANCELLED that came from the transport (an HTTP/2 reset, a
///   connection closed mid-call; tonic then keeps the transport error as the status's
///   source) rather than from the server: retry. The server's own INTERNAL (a failed
///   decode) arrives in trailers and has no source: not retried.
/// - OUT_OF_RANGE with `STREAM_DURATION_EXCEEDED`: continue on a new call.
/// - Anything else: fail.
pub fn verdict(status: &tonic::Status) -> Verdict {
    let hint = || {
        status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
    };
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted => Verdict::Retry { hint: hint() },
        Code::Internal | Code::Unknown | Code::Cancelled
            if std::error::Error::source(status).is_some() =>
        {
            Verdict::Retry { hint: None }
        }
        Code::OutOfRange
            if status
                .get_details_error_info()
                .is_some_and(|info| info.reason == STREAM_DURATION_EXCEEDED) =>
        {
            Verdict::Continue
        }
        _ => Verdict::Fail,
    }
}

/// Waits between attempts: exponential from [`RetryPolicy::first_backoff`], capped, with
/// jitter, never shorter than the server's hint, and none left once the failures have
/// lasted [`RetryPolicy::give_up_after`].
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    /// Failures in a row.
    failures: u32,
    /// Time spent failing (waits and the failed attempts), since the last success.
    failing_for: Duration,
    /// State of the jitter generator (xorshift).
    jitter: u64,
}

impl Backoff {
    /// A backoff for `policy`; `seed` varies the jitter between clients.
    pub fn new(policy: RetryPolicy, seed: u64) -> Self {
        Self {
            policy,
            failures: 0,
            failing_for: Duration::ZERO,
            // splitmix64 of the seed: nearby seeds give unrelated sequences.
            jitter: {
                let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) | 1
            },
        }
    }

    /// A call made progress (the server answered): the next failure starts afresh.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.failing_for = Duration::ZERO;
    }

    /// A call failed after `spent` (from its start to its failure); returns how long to
    /// wait before the next, or `None` to give up. `hint` is the server's RetryInfo.
    pub fn failed(&mut self, spent: Duration, hint: Option<Duration>) -> Option<Duration> {
        self.failing_for += spent;
        let exponent = self.failures.min(16);
        self.failures += 1;
        let ceiling = self
            .policy
            .first_backoff
            .saturating_mul(1 << exponent)
            .min(self.policy.max_backoff);
        // Between half and all of the ceiling, so clients cut off together spread out.
        let wait = ceiling.mul_f64(0.5 + 0.5 * self.next_unit());
        let wait = wait.max(hint.unwrap_or_default());
        if self.failing_for + wait > self.policy.give_up_after {
            return None;
        }
        self.failing_for += wait;
        Some(wait)
    }

    /// How long the failures in a row have lasted (attempts and waits).
    pub fn failing_for(&self) -> Duration {
        self.failing_for
    }

    /// Failures in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    fn next_unit(&mut self) -> f64 {
        let mut x = self.jitter;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.jitter = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Audio of a stream (16 kHz mono) from the last resume point on, in absolute sample
/// positions; grows at the end as audio arrives, shrinks at the front as finals cover it.
#[derive(Debug, Clone, Default)]
pub struct Tape {
    samples: VecDeque<f32>,
    /// Absolute position of `samples[0]`.
    start: u64,
    /// No more audio will come.
    ended: bool,
}

impl Tape {
    /// Appends audio.
    pub fn push(&mut self, samples: &[f32]) {
        self.samples.extend(samples);
    }

    /// No more audio will be pushed.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Whether [`Self::end`] was called.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Absolute position of the first sample kept.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Absolute position just past the last sample.
    pub fn end_position(&self) -> u64 {
        self.start + self.samples.len() as u64
    }

    /// Forgets the audio before `position` (a final covers it).
    pub fn forget_before(&mut self, position: u64) {
        let drop = position
            .saturating_sub(self.start)
            .min(self.samples.len() as u64);
        self.samples.drain(..drop as usize);
        self.start += drop;
    }

    /// Up to `max` samples from absolute position `from` (clamped to what is kept), or an
    /// empty vector when none is there yet.
    pub fn read(&self, from: u64, max: usize) -> Vec<f32> {
        let offset = from.saturating_sub(self.start) as usize;
        self.samples
            .range(offset.min(self.samples.len())..)
            .take(max)
            .copied()
            .collect()
    }
}

/// The bookkeeping across attempts: the resume point, utterance indices continued from
/// one call to the next, finals not shown twice.
#[derive(Debug, Clone, Default)]
pub struct Seam {
    /// The server's `final_offset` (absolute samples), the newest seen.
    final_offset: u64,
    /// End (absolute samples) of the last final shown.
    last_final_end: u64,
    /// Added to this attempt's utterance indices.
    index_base: u64,
    /// The index the next utterance will get (one past the last final shown).
    next_index: u64,
    /// Calls started.
    attempts: u32,
}

impl Seam {
    /// Where the next attempt starts (absolute samples): nothing before it will change.
    pub fn resume_point(&self) -> u64 {
        self.final_offset.max(self.last_final_end)
    }

    /// A new call starts; returns where its audio begins (its `stream_start_offset`).
    pub fn begin_attempt(&mut self) -> u64 {
        self.attempts += 1;
        self.index_base = self.next_index;
        self.resume_point()
    }

    /// Calls started so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The server's `final_offset`, in absolute samples.
    pub fn on_final_offset(&mut self, samples: u64) {
        self.final_offset = self.final_offset.max(samples);
    }

    /// This attempt's utterance index on the stream's continuous count.
    pub fn map_index(&self, index: u64) -> u64 {
        index + self.index_base
    }

    /// A final of this attempt with `index` (its own), ending at `end` (absolute samples):
    /// returns its index on the continuous count, or `None` when it ends at or before a
    /// final already shown (it is a repeat and must not be shown).
    pub fn on_final(&mut self, index: u64, end: u64) -> Option<u64> {
        if self.attempts > 1 && end <= self.last_final_end && self.last_final_end > 0 {
            return None;
        }
        let index = self.map_index(index);
        self.next_index = self.next_index.max(index + 1);
        self.last_final_end = self.last_final_end.max(end);
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tonic_types::ErrorDetails;

    #[test]
    fn transient_failures_are_retried_and_request_errors_are_not() {
        let draining = tonic::Status::with_error_details(
            Code::Unavailable,
            "draining",
            ErrorDetails::with_error_info("DRAINING", "transcribe.v1", HashMap::new()),
        );
        assert_eq!(verdict(&draining), Verdict::Retry { hint: None });
        let full = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "too many streams",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(1500))),
        );
        assert_eq!(
            verdict(&full),
            Verdict::Retry {
                hint: Some(Duration::from_millis(1500))
            }
        );
        let too_long = tonic::Status::with_error_details(
            Code::OutOfRange,
            "too long",
            ErrorDetails::with_error_info(
                STREAM_DURATION_EXCEEDED,
                "transcribe.v1",
                HashMap::new(),
            ),
        );
        assert_eq!(verdict(&too_long), Verdict::Continue);
        // The server's own INTERNAL (no transport error behind it) and request errors.
        for status in [
            tonic::Status::internal("internal error; see the server log"),
            tonic::Status::invalid_argument("odd byte count"),
            tonic::Status::not_found("no such model"),
            tonic::Status::unauthenticated("token"),
            tonic::Status::out_of_range("no audio for too long"),
        ] {
            assert_eq!(verdict(&status), Verdict::Fail, "{status:?}");
        }
        // A reset connection: tonic keeps the transport error as the source.
        let reset = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset",
        )));
        assert!(std::error::Error::source(&reset).is_some());
        assert_eq!(reset.code(), Code::Unknown);
        assert_eq!(verdict(&reset), Verdict::Retry { hint: None });
    }

    #[test]
    fn backoff_grows_honours_hints_and_gives_up_in_time() {
        let policy = RetryPolicy {
            give_up_after: Duration::from_secs(10),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
        };
        let mut backoff = Backoff::new(policy, 7);
        let mut waits = Vec::new();
        while let Some(wait) = backoff.failed(Duration::from_millis(10), None) {
            waits.push(wait);
        }
        // Each wait lies in [ceiling / 2, ceiling], the ceiling doubling up to the cap.
        for (i, wait) in waits.iter().enumerate() {
            let ceiling = Duration::from_millis(100 * (1 << i.min(5))).min(policy.max_backoff);
            assert!(*wait >= ceiling / 2 && *wait <= ceiling, "{i}: {wait:?}");
        }
        // It stopped because the next wait would have gone past the limit, not sooner.
        assert!(backoff.failing_for() <= policy.give_up_after);
        assert!(
            backoff.failing_for() + policy.max_backoff > policy.give_up_after,
            "{:?}",
            backoff.failing_for()
        );
        // A success starts afresh; a hint longer than the backoff is honoured.
        backoff.succeeded();
        assert_eq!(backoff.failures(), 0);
        let wait = backoff.failed(Duration::ZERO, Some(Duration::from_secs(1)));
        assert_eq!(wait, Some(Duration::from_secs(1)));
        // A hint past the limit gives up at once.
        backoff.succeeded();
        assert_eq!(
            backoff.failed(Duration::ZERO, Some(Duration::from_secs(11))),
            None
        );
        // Two clients seeded differently do not wait alike.
        let a = Backoff::new(policy, 1).failed(Duration::ZERO, None);
        let b = Backoff::new(policy, 2).failed(Duration::ZERO, None);
        assert_ne!(a, b);
    }

    #[test]
    fn tape_reads_from_absolute_positions_and_forgets_the_front() {
        let mut tape = Tape::default();
        tape.push(&[0.0, 1.0, 2.0, 3.0]);
        tape.push(&[4.0, 5.0]);
        assert_eq!(tape.read(2, 3), vec![2.0, 3.0, 4.0]);
        tape.forget_before(3);
        assert_eq!((tape.start(), tape.end_position()), (3, 6));
        assert_eq!(tape.read(3, 10), vec![3.0, 4.0, 5.0]);
        // Before the start reads from the start; past the end reads nothing.
        assert_eq!(tape.read(0, 1), vec![3.0]);
        assert!(tape.read(6, 10).is_empty());
        tape.forget_before(100);
        assert_eq!((tape.start(), tape.end_position()), (6, 6));
        tape.push(&[6.0]);
        assert_eq!(tape.read(6, 10), vec![6.0]);
        assert!(!tape.is_ended());
        tape.end();
        assert!(tape.is_ended());
    }

    #[test]
    fn the_seam_resumes_after_the_last_final_and_never_repeats_one() {
        let mut seam = Seam::default();
        assert_eq!(seam.begin_attempt(), 0);
        // Attempt 1: utterances 0 and 1 final, 2 open when the call fails.
        assert_eq!(seam.on_final(0, 16_000), Some(0));
        seam.on_final_offset(20_000);
        assert_eq!(seam.on_final(1, 48_000), Some(1));
        // final_offset lagging behind the final in hand: the final's end wins.
        seam.on_final_offset(40_000);
        assert_eq!(seam.resume_point(), 48_000);
        seam.on_final_offset(52_000);
        assert_eq!(seam.resume_point(), 52_000);
        // Attempt 2 starts at the point; its utterance 0 is the stream's 2.
        assert_eq!(seam.begin_attempt(), 52_000);
        assert_eq!(seam.map_index(0), 2);
        // A final ending at or before the last one shown is a repeat.
        assert_eq!(seam.on_final(0, 48_000), None);
        assert_eq!(seam.on_final(0, 70_000), Some(2));
        // Attempt 3 fails before any final: attempt 4 starts where 3 did, same indices.
        assert_eq!(seam.begin_attempt(), 70_000);
        assert_eq!(seam.begin_attempt(), 70_000);
        assert_eq!(seam.map_index(0), 3);
        assert_eq!(seam.attempts(), 4);
    }
}
