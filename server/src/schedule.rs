//! The pool's scheduling rules as plain functions over plain values (no threads, no clock of
//! their own; tested in milliseconds): which waiting decode a free worker takes next, and
//! whether the workers keep up well enough to admit one more stream.
//!
//! - **Order** ([`next`]): finals (and file/Recognize decodes: someone waits for the whole
//!   answer) before partials; within a class, the stream that has waited longest first. A
//!   partial that has waited [`PARTIAL_AGING`] counts as a final, so a flood of finals
//!   cannot starve a stream's partials. Each stream holds at most one queue place (the pool
//!   replaces a stale job in place), so oldest-first is round-robin across streams.
//! - **Load** ([`LoadWindow`]): every finished decode's queue wait and decode time over the
//!   last [`LOAD_WINDOW`]; [`Load`] summarises them (decodes per second, queue wait p50/p95,
//!   worker busy fraction).
//! - **Admission** ([`AdmissionRule::refuses`]): refuse a new stream while decodes come back
//!   later than the limit: the recent p95 queue wait, the recent p95 of a partial's wait plus
//!   decode time, or the wait of the oldest job still queued. Then the workers already cannot
//!   keep the open streams real-time, and one more stream would make every stream later
//!   rather than get served. The partials' round trip is what catches a saturated GPU: with
//!   as many workers as streams nothing queues, but every decode slows down (an H200 with
//!   large-v3 shapes: partials from 0.31 s at 4 streams to 0.50 s at 8, queue wait 0).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A queued partial that has waited this long is ranked with the finals.
pub const PARTIAL_AGING: Duration = Duration::from_secs(1);
/// How far back [`LoadWindow`] looks.
pub const LOAD_WINDOW: Duration = Duration::from_secs(10);
/// Decodes a window needs before its percentiles count for admission.
pub const MIN_DECODES_FOR_ADMISSION: usize = 20;

/// How urgent a decode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A final, a file chunk or a Recognize call: its result ends a wait.
    Final,
    /// A partial (interim) decode: a newer one would replace it.
    Partial,
}

/// The index, in `waiting` (each entry a queued stream's priority and when it took its queue
/// place), of the job a free worker should take at `now`; `None` when nothing waits.
pub fn next(
    waiting: impl IntoIterator<Item = (Priority, Instant)>,
    now: Instant,
    aging: Duration,
) -> Option<usize> {
    waiting
        .into_iter()
        .enumerate()
        .min_by_key(|(_, (priority, since))| {
            let urgent =
                *priority == Priority::Final || now.saturating_duration_since(*since) >= aging;
            (!urgent, *since)
        })
        .map(|(index, _)| index)
}

/// One finished decode, as the load window keeps it.
#[derive(Debug, Clone, Copy)]
struct Done {
    finished: Instant,
    priority: Priority,
    queued: Duration,
    inference: Duration,
}

/// The decodes finished over the last `window`.
#[derive(Debug)]
pub struct LoadWindow {
    window: Duration,
    workers: usize,
    done: VecDeque<Done>,
}

/// A summary of a [`LoadWindow`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// Decodes finished in the window.
    pub decodes: usize,
    /// Decodes per second over the window.
    pub decodes_per_second: f64,
    /// Median time a decode waited for a worker.
    pub queue_wait_p50: Duration,
    /// 95th percentile of the same.
    pub queue_wait_p95: Duration,
    /// 95th percentile of a partial decode's wait plus decode time (zero without partials).
    pub partial_round_trip_p95: Duration,
    /// Fraction of the workers' time spent decoding (0..=1).
    pub busy: f64,
}

impl LoadWindow {
    /// An empty window over `window` for `workers` workers.
    pub fn new(window: Duration, workers: usize) -> Self {
        Self {
            window,
            workers: workers.max(1),
            done: VecDeque::new(),
        }
    }

    /// Records a decode of `priority` that finished at `finished` after waiting `queued` and
    /// running `inference`.
    pub fn record(
        &mut self,
        finished: Instant,
        priority: Priority,
        queued: Duration,
        inference: Duration,
    ) {
        self.done.push_back(Done {
            finished,
            priority,
            queued,
            inference,
        });
        self.forget(finished);
    }

    fn forget(&mut self, now: Instant) {
        while let Some(first) = self.done.front() {
            if now.saturating_duration_since(first.finished) >= self.window {
                self.done.pop_front();
            } else {
                break;
            }
        }
    }

    /// The load over the window ending at `now`.
    pub fn load(&mut self, now: Instant) -> Load {
        self.forget(now);
        let decodes = self.done.len();
        if decodes == 0 {
            return Load::default();
        }
        let mut waits: Vec<Duration> = self.done.iter().map(|d| d.queued).collect();
        waits.sort_unstable();
        let mut round_trips: Vec<Duration> = self
            .done
            .iter()
            .filter(|d| d.priority == Priority::Partial)
            .map(|d| d.queued + d.inference)
            .collect();
        round_trips.sort_unstable();
        let window_start = now.checked_sub(self.window);
        // Decode time inside the window (a decode that began before it counts its part).
        let busy: Duration = self
            .done
            .iter()
            .map(|d| {
                let start = d.finished.checked_sub(d.inference);
                match (start, window_start) {
                    (Some(start), Some(ws)) if start < ws => {
                        d.finished.saturating_duration_since(ws)
                    }
                    _ => d.inference,
                }
            })
            .sum();
        let seconds = self.window.as_secs_f64();
        Load {
            decodes,
            decodes_per_second: decodes as f64 / seconds,
            queue_wait_p50: nearest_rank(&waits, 0.50),
            queue_wait_p95: nearest_rank(&waits, 0.95),
            partial_round_trip_p95: if round_trips.is_empty() {
                Duration::ZERO
            } else {
                nearest_rank(&round_trips, 0.95)
            },
            busy: (busy.as_secs_f64() / (seconds * self.workers as f64)).min(1.0),
        }
    }
}

/// The nearest-rank percentile `q` of sorted `values` (not empty).
fn nearest_rank(values: &[Duration], q: f64) -> Duration {
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// When a new stream is refused for lack of compute (`--admission-wait`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionRule {
    /// Queue wait over which streams are refused; zero turns the rule off.
    pub max_wait: Duration,
    /// Decodes the window needs before its p95 counts.
    pub min_decodes: usize,
}

impl AdmissionRule {
    /// Why a new stream is refused under `load`, with `oldest_waiting` the wait so far of the
    /// job queued longest (zero when none waits); `None` admits it.
    pub fn refuses(&self, load: &Load, oldest_waiting: Duration) -> Option<String> {
        if self.max_wait.is_zero() {
            return None;
        }
        let limit = self.max_wait.as_secs_f64();
        let window = LOAD_WINDOW.as_secs();
        if load.decodes >= self.min_decodes && load.queue_wait_p95 > self.max_wait {
            return Some(format!(
                "decodes are falling behind: they waited {:.2}s for a worker at the 95th \
                 percentile over the last {window}s (the server's limit is {limit}s)",
                load.queue_wait_p95.as_secs_f64(),
            ));
        }
        if load.decodes >= self.min_decodes && load.partial_round_trip_p95 > self.max_wait {
            return Some(format!(
                "decodes are falling behind: partial results took {:.2}s (wait and decode) at \
                 the 95th percentile over the last {window}s (the server's limit is {limit}s)",
                load.partial_round_trip_p95.as_secs_f64(),
            ));
        }
        if oldest_waiting > self.max_wait {
            return Some(format!(
                "decodes are falling behind: one has waited {:.2}s for a worker (the \
                 server's limit is {limit}s)",
                oldest_waiting.as_secs_f64()
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn finals_first_then_the_longest_waiting_stream() {
        let t0 = Instant::now();
        let now = t0 + 500 * MS;
        let queue = [
            (Priority::Partial, t0),
            (Priority::Final, t0 + 100 * MS),
            (Priority::Final, t0 + 50 * MS),
            (Priority::Partial, t0 + 10 * MS),
        ];
        assert_eq!(next(queue, now, PARTIAL_AGING), Some(2));
        assert_eq!(
            next(queue[..2].iter().copied(), now, PARTIAL_AGING),
            Some(1)
        );
        assert_eq!(
            next([queue[0], queue[3]], now, PARTIAL_AGING),
            Some(0),
            "oldest partial first"
        );
        assert_eq!(next([], now, PARTIAL_AGING), None);
    }

    #[test]
    fn a_partial_that_waited_long_enough_ranks_with_the_finals() {
        let t0 = Instant::now();
        let queue = [(Priority::Final, t0 + 300 * MS), (Priority::Partial, t0)];
        assert_eq!(next(queue, t0 + 900 * MS, PARTIAL_AGING), Some(0));
        // At 1 s the partial has aged into the finals' rank, and it is older.
        assert_eq!(next(queue, t0 + 1000 * MS, PARTIAL_AGING), Some(1));
    }

    #[test]
    fn no_stream_starves_under_a_stream_of_finals() {
        // One worker, decodes of 200 ms; one stream's partial waits while three streams
        // keep a final queued all the time. Aging serves the partial within a second.
        let t0 = Instant::now();
        let mut now = t0;
        let mut queue = vec![
            (Priority::Partial, t0),
            (Priority::Final, t0),
            (Priority::Final, t0),
            (Priority::Final, t0),
        ];
        let mut served_partial_at = None;
        for _ in 0..20 {
            let Some(i) = next(queue.iter().copied(), now, PARTIAL_AGING) else {
                break;
            };
            now += 200 * MS;
            if queue[i].0 == Priority::Partial {
                served_partial_at = Some(now);
                queue.remove(i);
            } else {
                // That stream's next final arrives at once.
                queue[i].1 = now;
            }
        }
        let served = served_partial_at.expect("the partial was served");
        assert!(served - t0 <= PARTIAL_AGING + 200 * MS, "{:?}", served - t0);
    }

    #[test]
    fn load_summarises_the_window() {
        let t0 = Instant::now();
        let mut w = LoadWindow::new(Duration::from_secs(10), 2);
        assert_eq!(w.load(t0), Load::default());
        // 20 decodes of 500 ms over 10 s on 2 workers: half busy.
        for i in 1..=20u32 {
            let priority = if i % 2 == 0 {
                Priority::Partial
            } else {
                Priority::Final
            };
            w.record(t0 + i * 500 * MS, priority, i * 10 * MS, 500 * MS);
        }
        let load = w.load(t0 + 10_000 * MS);
        assert_eq!(load.decodes, 20);
        assert!((load.decodes_per_second - 2.0).abs() < 1e-9);
        assert_eq!(load.queue_wait_p50, 100 * MS);
        assert_eq!(load.queue_wait_p95, 190 * MS);
        // Partials (even i): waits 20..200 ms, each plus 500 ms of decoding.
        assert_eq!(load.partial_round_trip_p95, 700 * MS);
        assert!((load.busy - 0.5).abs() < 1e-9, "{}", load.busy);
        // Five seconds later the first ten (finished at 0.5..5 s) have left the window.
        let load = w.load(t0 + 15_000 * MS);
        assert_eq!(load.decodes, 10);
        assert_eq!(load.queue_wait_p50, 150 * MS);
    }

    #[test]
    fn a_decode_straddling_the_window_counts_its_part() {
        let t0 = Instant::now();
        let mut w = LoadWindow::new(Duration::from_secs(10), 1);
        w.record(
            t0 + 12_000 * MS,
            Priority::Final,
            Duration::ZERO,
            4_000 * MS,
        );
        let load = w.load(t0 + 20_000 * MS);
        // It ran 8..12 s; the window is 10..20 s: 2 s of 10.
        assert!((load.busy - 0.2).abs() < 1e-9, "{}", load.busy);
    }

    #[test]
    fn admission_refuses_only_when_decodes_fall_behind() {
        let rule = AdmissionRule {
            max_wait: 500 * MS,
            min_decodes: 20,
        };
        let behind = Load {
            decodes: 40,
            queue_wait_p95: 800 * MS,
            ..Load::default()
        };
        let reason = rule.refuses(&behind, Duration::ZERO).expect("refused");
        assert!(reason.contains("0.80s"), "{reason}");
        // Nothing queues (as many workers as streams), but partials come back late: a
        // saturated GPU.
        let slow = Load {
            queue_wait_p95: Duration::ZERO,
            partial_round_trip_p95: 520 * MS,
            ..behind
        };
        let reason = rule.refuses(&slow, Duration::ZERO).expect("refused");
        assert!(reason.contains("partial results took 0.52s"), "{reason}");
        let few = Load {
            decodes: 5,
            ..behind
        };
        assert_eq!(rule.refuses(&few, Duration::ZERO), None, "too few decodes");
        assert!(rule.refuses(&few, 600 * MS).is_some(), "one job stuck");
        let fine = Load {
            queue_wait_p95: 400 * MS,
            partial_round_trip_p95: 450 * MS,
            ..behind
        };
        assert_eq!(rule.refuses(&fine, 100 * MS), None);
        let off = AdmissionRule {
            max_wait: Duration::ZERO,
            ..rule
        };
        assert_eq!(off.refuses(&behind, Duration::from_secs(9)), None);
    }
}
