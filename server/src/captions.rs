//! The caption broadcast: one [`CaptionHub`] per server-side source fans the results of
//! its single recognition pipeline ([`crate::sources`]) out to every StreamCaptions
//! subscriber, each through its own bounded queue.
//!
//! ```text
//! source pipeline ──► hub.publish ──► per-subscriber queue ──► SubscriberStream ──► tonic
//!                      └─► history (recent finals, for late joiners)
//! ```
//!
//! # Capacities and full-policies
//! - Per-subscriber queue ([`SUBSCRIBER_QUEUE_CAPACITY`] undelivered finals, source states
//!   and speech events): interim results and heartbeats **keep only the latest** (a newer
//!   one replaces the waiting one; a final supersedes waiting interims of its utterance), so
//!   a slow subscriber sees a gap in `sequence_number`. When the must-deliver items reach
//!   the capacity the subscriber is hopelessly behind: its queue is **dropped and the call
//!   ends** with RESOURCE_EXHAUSTED. The pipeline never waits for a subscriber.
//! - History ([`HISTORY_CAPACITY`] recent finals): **drop the oldest**.
//!
//! Sequence numbers are given per subscriber when a message is queued, so a replaced
//! interim leaves a gap where it would have been.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;
use transcribe_proto::v1::{
    CaptionSource, SourceState, SourceStatus, StreamCaptionsRequest, StreamCaptionsResponse,
};

use crate::config::{CaptionLimits, SourceSpec};
use crate::delivery::Delivery;
use crate::error::{Capacity, RequestError};

pub use crate::config::{HISTORY_CAPACITY, SUBSCRIBER_QUEUE_CAPACITY};

/// What a subscriber asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubscribeOptions {
    interim_results: bool,
    word_time_offsets: bool,
    voice_activity_events: bool,
    history: usize,
}

impl SubscribeOptions {
    /// Validates a request's options (all but the source name).
    pub(crate) fn from_request(request: &StreamCaptionsRequest) -> Result<Self, RequestError> {
        let history = usize::try_from(request.history_size)
            .map_err(|_| RequestError::invalid("history_size", "must not be negative"))?;
        Ok(Self {
            interim_results: request.interim_results,
            word_time_offsets: request.enable_word_time_offsets,
            voice_activity_events: request.enable_voice_activity_events,
            history,
        })
    }
}

/// A queued message.
struct Item {
    response: StreamCaptionsResponse,
    class: Delivery,
    /// Counts against the subscriber's capacity (live must-deliver messages).
    counted: bool,
}

/// One subscriber's queue, shared by the hub (producer) and its response stream.
struct Queue {
    items: VecDeque<Item>,
    next_sequence: u64,
    /// Counted items waiting.
    waiting: usize,
    /// How the call ends once `items` is drained (set when the source ends, the server
    /// drains, or the subscriber overflowed).
    end: Option<Result<(), Status>>,
    /// The response stream was dropped (the client left).
    gone: bool,
    /// Droppable messages replaced before delivery.
    dropped: u64,
}

struct Subscriber {
    options: SubscribeOptions,
    queue: Mutex<Queue>,
    /// Rung after each change to `queue`. Capacity 1; full-policy: a ring while one is
    /// pending is dropped (one pending ring already wakes the stream).
    bell: mpsc::Sender<()>,
}

impl Subscriber {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ring(&self) {
        let _ = self.bell.try_send(());
    }
}

/// Counters of one source's broadcast (for tests and metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptionStats {
    /// Subscribers connected now.
    pub subscribers: usize,
    /// Finals published since start.
    pub finals: u64,
    /// Interim results and heartbeats replaced before a subscriber took them.
    pub dropped_interims: u64,
    /// Subscribers ended with RESOURCE_EXHAUSTED for falling behind.
    pub overflowed: u64,
    /// The source's current state.
    pub state: i32,
}

struct HubState {
    source: CaptionSource,
    subscribers: Vec<Arc<Subscriber>>,
    history: VecDeque<StreamCaptionsResponse>,
    /// The source ended (ENDED, OK) or the server drains (UNAVAILABLE): new subscribers get
    /// the description and history, then this.
    closed: Option<Result<(), Status>>,
    finals: u64,
    dropped: u64,
    overflowed: u64,
}

/// The broadcast point of one source.
pub struct CaptionHub {
    name: String,
    limits: CaptionLimits,
    /// Subscribers admitted at once (`--max-subscribers`).
    max_subscribers: usize,
    state: Mutex<HubState>,
}

impl CaptionHub {
    fn new(spec: &SourceSpec, limits: CaptionLimits, max_subscribers: usize) -> Self {
        Self {
            name: spec.name.clone(),
            limits,
            max_subscribers,
            state: Mutex::new(HubState {
                source: CaptionSource {
                    name: spec.name.clone(),
                    display_name: spec.display_name(),
                    kind: spec.kind() as i32,
                    state: SourceState::Unspecified as i32,
                    ..Default::default()
                },
                subscribers: Vec::new(),
                history: VecDeque::new(),
                closed: None,
                finals: 0,
                dropped: 0,
                overflowed: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The source as subscribers see it now (state, model, capture format...).
    pub fn source(&self) -> CaptionSource {
        self.lock().source.clone()
    }

    /// The broadcast's counters.
    pub fn stats(&self) -> CaptionStats {
        let mut hub = self.lock();
        hub.subscribers.retain(|s| !s.lock().gone);
        CaptionStats {
            subscribers: hub.subscribers.len(),
            finals: hub.finals,
            dropped_interims: hub.dropped,
            overflowed: hub.overflowed,
            state: hub.source.state,
        }
    }

    /// A new subscription: the source description, then up to `options.history` recent
    /// finals (`is_replay`), then live messages.
    ///
    /// # Errors
    /// [`RequestError::Overloaded`] ([`Capacity::Subscribers`]) when the source already has
    /// its maximum number of subscribers.
    pub(crate) fn subscribe(
        &self,
        options: SubscribeOptions,
    ) -> Result<SubscriberStream, RequestError> {
        let (bell, doorbell) = mpsc::channel(1);
        let mut hub = self.lock();
        hub.subscribers.retain(|s| !s.lock().gone);
        if hub.subscribers.len() >= self.max_subscribers {
            return Err(RequestError::Overloaded {
                capacity: Capacity::Subscribers,
                reason: format!(
                    "caption source {:?} has {} subscribers (the server's limit)",
                    self.name, self.max_subscribers
                ),
            });
        }
        let mut queue = Queue {
            items: VecDeque::new(),
            next_sequence: 1,
            waiting: 0,
            end: hub.closed.clone(),
            gone: false,
            dropped: 0,
        };
        let first = StreamCaptionsResponse {
            source: Some(hub.source.clone()),
            ..Default::default()
        };
        push_uncounted(&mut queue, first, Delivery::State, &options);
        let replay = options.history.min(hub.history.len());
        for past in hub.history.iter().skip(hub.history.len() - replay) {
            let mut response = past.clone();
            response.is_replay = true;
            push_uncounted(&mut queue, response, Delivery::Final(0), &options);
        }
        let subscriber = Arc::new(Subscriber {
            options,
            queue: Mutex::new(queue),
            bell,
        });
        if hub.closed.is_none() {
            hub.subscribers.push(subscriber.clone());
        }
        drop(hub);
        subscriber.ring();
        Ok(SubscriberStream {
            subscriber,
            doorbell,
            finished: false,
        })
    }

    /// Sets the source's state (and its in-band status) and tells every subscriber.
    pub(crate) fn set_state(&self, state: SourceState, status: Option<SourceStatus>) {
        self.update_source(|s| {
            s.state = state as i32;
            s.status = status;
        });
    }

    /// Changes the source description (a (re)start: capture format, model, start time)
    /// and tells every subscriber.
    pub(crate) fn update_source(&self, change: impl FnOnce(&mut CaptionSource)) {
        let mut hub = self.lock();
        change(&mut hub.source);
        let response = StreamCaptionsResponse {
            source: Some(hub.source.clone()),
            ..Default::default()
        };
        self.broadcast(&mut hub, &response, Delivery::State);
    }

    /// Publishes a message of a source's pipeline to every subscriber that wants it; a
    /// final is also kept for late joiners.
    pub(crate) fn publish(&self, response: StreamCaptionsResponse, delivery: Delivery) {
        let mut hub = self.lock();
        if let Delivery::Final(_) = delivery {
            hub.finals += 1;
            if self.limits.history > 0 {
                if hub.history.len() == self.limits.history {
                    hub.history.pop_front();
                }
                hub.history.push_back(response.clone());
            }
        }
        self.broadcast(&mut hub, &response, delivery);
    }

    /// Ends every subscription once its queue is drained: `Ok` (the source ended) or a
    /// status (the server drains). Later subscribers get the description, history, then
    /// the same end.
    pub(crate) fn close(&self, end: Result<(), Status>) {
        let mut hub = self.lock();
        hub.closed = Some(end.clone());
        for subscriber in hub.subscribers.drain(..) {
            let mut queue = subscriber.lock();
            if queue.end.is_none() {
                queue.end = Some(end.clone());
            }
            drop(queue);
            subscriber.ring();
        }
    }

    fn broadcast(&self, hub: &mut HubState, response: &StreamCaptionsResponse, class: Delivery) {
        let capacity = self.limits.subscriber_queue;
        let name = &self.name;
        let mut dropped = 0;
        let mut overflowed = 0;
        hub.subscribers.retain(|subscriber| {
            let mut queue = subscriber.lock();
            if queue.gone || queue.end.is_some() {
                return false;
            }
            let before = queue.dropped;
            let keep = offer(&mut queue, response, class, &subscriber.options, capacity);
            dropped += queue.dropped - before;
            if !keep {
                overflowed += 1;
                tracing::info!(
                    message = "Caption subscriber fell behind; ending it.",
                    source = %name,
                    capacity,
                );
                queue.items.clear();
                queue.waiting = 0;
                queue.end = Some(Err(RequestError::SubscriberTooSlow {
                    name: name.clone(),
                    capacity,
                }
                .to_status()));
            }
            drop(queue);
            subscriber.ring();
            keep
        });
        hub.dropped += dropped;
        hub.overflowed += overflowed;
    }
}

/// Whether a subscriber wants a message of `class`.
fn wants(options: &SubscribeOptions, class: Delivery) -> bool {
    match class {
        Delivery::Interim(_) | Delivery::Heartbeat => options.interim_results,
        Delivery::Event => options.voice_activity_events,
        Delivery::Final(_) | Delivery::State => true,
    }
}

/// The response as this subscriber sees it (words only if asked for), numbered.
fn personalise(
    queue: &mut Queue,
    response: &StreamCaptionsResponse,
    options: &SubscribeOptions,
) -> StreamCaptionsResponse {
    let mut response = response.clone();
    if !options.word_time_offsets {
        for result in &mut response.results {
            for alternative in &mut result.alternatives {
                alternative.words.clear();
            }
        }
    }
    response.sequence_number = queue.next_sequence;
    queue.next_sequence += 1;
    response
}

/// Queues a subscription's opening messages (not counted against the capacity).
fn push_uncounted(
    queue: &mut Queue,
    response: StreamCaptionsResponse,
    class: Delivery,
    options: &SubscribeOptions,
) {
    let response = personalise(queue, &response, options);
    queue.items.push_back(Item {
        response,
        class,
        counted: false,
    });
}

/// Offers a live message to one queue, applying the full-policy. `false`: the subscriber
/// overflowed and must be ended.
fn offer(
    queue: &mut Queue,
    response: &StreamCaptionsResponse,
    class: Delivery,
    options: &SubscribeOptions,
    capacity: usize,
) -> bool {
    if !wants(options, class) {
        return true;
    }
    let response = personalise(queue, response, options);
    // Keep only the latest droppable: a newer interim or heartbeat replaces a waiting one,
    // and a final replaces waiting interims of its utterance (and earlier ones).
    let before = queue.items.len();
    queue.items.retain(|item| !class.supersedes(item.class));
    queue.dropped += (before - queue.items.len()) as u64;
    let counted = !class.is_replaceable();
    if counted {
        if queue.waiting >= capacity {
            return false;
        }
        queue.waiting += 1;
    }
    queue.items.push_back(Item {
        response,
        class,
        counted,
    });
    true
}

/// One StreamCaptions call's response stream. Dropping it (the client left) unsubscribes.
pub struct SubscriberStream {
    subscriber: Arc<Subscriber>,
    doorbell: mpsc::Receiver<()>,
    finished: bool,
}

impl Stream for SubscriberStream {
    type Item = Result<StreamCaptionsResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if self.finished {
                return Poll::Ready(None);
            }
            {
                let mut queue = self.subscriber.lock();
                if let Some(item) = queue.items.pop_front() {
                    if item.counted {
                        queue.waiting = queue.waiting.saturating_sub(1);
                    }
                    return Poll::Ready(Some(Ok(item.response)));
                }
                if let Some(end) = queue.end.take() {
                    drop(queue);
                    self.finished = true;
                    return Poll::Ready(end.err().map(Err));
                }
            }
            match self.doorbell.poll_recv(cx) {
                Poll::Ready(Some(())) => {}
                // The sender lives in `subscriber`, which we hold: never closed.
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for SubscriberStream {
    fn drop(&mut self) {
        let mut queue = self.subscriber.lock();
        queue.gone = true;
        queue.items.clear();
    }
}

/// Every configured source's hub, by name; the first is the default.
pub struct CaptionRegistry {
    hubs: HashMap<String, Arc<CaptionHub>>,
    order: Vec<String>,
}

impl CaptionRegistry {
    /// Hubs for `specs` (not started: [`crate::sources::start`] runs their pipelines).
    pub(crate) fn new(specs: &[SourceSpec], limits: CaptionLimits, max_subscribers: usize) -> Self {
        let hubs = specs
            .iter()
            .map(|s| {
                let hub = CaptionHub::new(s, limits, max_subscribers);
                (s.name.clone(), Arc::new(hub))
            })
            .collect();
        Self {
            hubs,
            order: specs.iter().map(|s| s.name.clone()).collect(),
        }
    }

    /// The hub of `name` (empty: the default source).
    ///
    /// # Errors
    /// [`RequestError::UnknownSource`] listing the configured names.
    pub fn find(&self, name: &str) -> Result<Arc<CaptionHub>, RequestError> {
        let wanted = if name.is_empty() {
            self.order.first().map(String::as_str)
        } else {
            Some(name)
        };
        wanted
            .and_then(|n| self.hubs.get(n))
            .cloned()
            .ok_or_else(|| RequestError::UnknownSource {
                name: name.to_owned(),
                valid: self.order.clone(),
            })
    }

    /// The configured source names, the default first.
    pub fn names(&self) -> &[String] {
        &self.order
    }

    /// Every hub, in configuration order.
    pub fn hubs(&self) -> impl Iterator<Item = &Arc<CaptionHub>> {
        self.order.iter().filter_map(|n| self.hubs.get(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use transcribe_proto::v1::{SpeechRecognitionAlternative, StreamingRecognitionResult};

    fn spec() -> Result<SourceSpec, String> {
        SourceSpec::parse("room=mic")
    }

    fn options(interim: bool) -> SubscribeOptions {
        SubscribeOptions {
            interim_results: interim,
            word_time_offsets: false,
            voice_activity_events: false,
            history: 0,
        }
    }

    fn result(text: &str, is_final: bool, index: u64) -> StreamCaptionsResponse {
        StreamCaptionsResponse {
            results: vec![StreamingRecognitionResult {
                alternatives: vec![SpeechRecognitionAlternative {
                    transcript: text.into(),
                    ..Default::default()
                }],
                is_final,
                utterance_index: index,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Everything queued for a subscriber right now, and how it ends (if it does).
    fn drain(stream: &mut SubscriberStream) -> (Vec<StreamCaptionsResponse>, Option<Status>) {
        let mut queue = stream.subscriber.lock();
        let items = queue.items.drain(..).map(|i| i.response).collect();
        queue.waiting = 0;
        let end = queue.end.clone().and_then(Result::err);
        (items, end)
    }

    fn limits(queue: usize, history: usize) -> CaptionLimits {
        CaptionLimits {
            subscriber_queue: queue,
            history,
            ..CaptionLimits::default()
        }
    }

    #[test]
    fn slow_subscriber_loses_interims_not_finals() -> Result<(), String> {
        let hub = CaptionHub::new(&spec()?, limits(8, 10), 100);
        let mut slow = hub.subscribe(options(true)).map_err(|e| e.to_string())?;
        for i in 0..5 {
            hub.publish(
                result(&format!("partial {i}"), false, 0),
                Delivery::Interim(0),
            );
        }
        hub.publish(result("final zero", true, 0), Delivery::Final(0));
        hub.publish(result("next", false, 1), Delivery::Interim(1));
        let (items, end) = drain(&mut slow);
        assert!(end.is_none());
        let texts: Vec<_> = items
            .iter()
            .filter_map(|r| r.results.first())
            .map(|r| r.alternatives[0].transcript.clone())
            .collect();
        assert_eq!(texts, ["final zero", "next"]);
        let sequence: Vec<u64> = items.iter().map(|r| r.sequence_number).collect();
        // 1 = source description, 2..=6 interims (dropped), 7 final, 8 the newest interim.
        assert_eq!(sequence, [1, 7, 8]);
        assert_eq!(hub.stats().dropped_interims, 5);
        Ok(())
    }

    #[test]
    fn subscriber_without_interims_sees_no_gap() -> Result<(), String> {
        let hub = CaptionHub::new(&spec()?, limits(8, 10), 100);
        let mut plain = hub.subscribe(options(false)).map_err(|e| e.to_string())?;
        hub.publish(result("partial", false, 0), Delivery::Interim(0));
        hub.publish(result("one", true, 0), Delivery::Final(0));
        hub.publish(result("two", true, 1), Delivery::Final(1));
        let (items, _) = drain(&mut plain);
        let sequence: Vec<u64> = items.iter().map(|r| r.sequence_number).collect();
        assert_eq!(sequence, [1, 2, 3]);
        Ok(())
    }

    #[test]
    fn hopelessly_behind_is_ended_with_resource_exhausted() -> Result<(), String> {
        let hub = CaptionHub::new(&spec()?, limits(3, 10), 100);
        let mut slow = hub.subscribe(options(false)).map_err(|e| e.to_string())?;
        let mut fast = hub.subscribe(options(false)).map_err(|e| e.to_string())?;
        for i in 0..3 {
            hub.publish(result("x", true, i), Delivery::Final(i));
            let _ = drain(&mut fast);
        }
        assert_eq!(hub.stats().subscribers, 2);
        hub.publish(result("y", true, 3), Delivery::Final(3));
        let (items, end) = drain(&mut slow);
        assert!(items.is_empty(), "the overflowed queue is dropped");
        assert_eq!(end.map(|s| s.code()), Some(tonic::Code::ResourceExhausted));
        let (items, end) = drain(&mut fast);
        assert_eq!(items.len(), 1);
        assert!(end.is_none());
        let stats = hub.stats();
        assert_eq!((stats.subscribers, stats.overflowed), (1, 1));
        Ok(())
    }

    #[test]
    fn late_joiner_gets_recent_finals_as_replay() -> Result<(), String> {
        let hub = CaptionHub::new(&spec()?, limits(8, 2), 100);
        for (i, text) in ["a", "b", "c"].iter().enumerate() {
            hub.publish(result(text, true, i as u64), Delivery::Final(i as u64));
        }
        let mut late = hub
            .subscribe(SubscribeOptions {
                history: 5,
                ..options(false)
            })
            .map_err(|e| e.to_string())?;
        let (items, _) = drain(&mut late);
        assert!(items[0].source.is_some());
        let replayed: Vec<_> = items[1..]
            .iter()
            .map(|r| (r.results[0].alternatives[0].transcript.clone(), r.is_replay))
            .collect();
        assert_eq!(replayed, [("b".to_owned(), true), ("c".to_owned(), true)]);
        Ok(())
    }

    #[test]
    fn close_ends_current_and_later_subscribers() -> Result<(), String> {
        let hub = CaptionHub::new(&spec()?, limits(8, 2), 100);
        let mut early = hub.subscribe(options(false)).map_err(|e| e.to_string())?;
        hub.set_state(SourceState::Ended, None);
        hub.close(Ok(()));
        let (items, _) = drain(&mut early);
        assert_eq!(items.len(), 2);
        assert_eq!(
            early.subscriber.lock().end.as_ref().map(Result::is_ok),
            Some(true)
        );
        let late = hub.subscribe(options(false)).map_err(|e| e.to_string())?;
        assert_eq!(
            late.subscriber.lock().end.as_ref().map(Result::is_ok),
            Some(true)
        );
        assert_eq!(hub.stats().subscribers, 0);
        Ok(())
    }

    #[test]
    fn subscribers_beyond_the_limit_are_refused_until_one_leaves() -> Result<(), String> {
        let hub = CaptionHub::new(&spec()?, limits(8, 2), 2);
        let first = hub.subscribe(options(false)).map_err(|e| e.to_string())?;
        let _second = hub.subscribe(options(false)).map_err(|e| e.to_string())?;
        let status = match hub.subscribe(options(false)) {
            Err(e) => e.to_status(),
            Ok(_) => return Err("a third subscriber was admitted".into()),
        };
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        drop(first);
        hub.subscribe(options(false)).map_err(|e| e.to_string())?;
        Ok(())
    }

    #[test]
    fn unknown_source_is_not_found() -> Result<(), String> {
        let registry = CaptionRegistry::new(&[spec()?], CaptionLimits::default(), 100);
        assert!(registry.find("").is_ok());
        assert!(registry.find("room").is_ok());
        match registry.find("hall") {
            Err(e) => assert_eq!(e.to_status().code(), tonic::Code::NotFound),
            Ok(_) => return Err("hall found".into()),
        }
        let empty = CaptionRegistry::new(&[], CaptionLimits::default(), 100);
        assert!(empty.find("").is_err());
        Ok(())
    }
}
