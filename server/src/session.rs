//! One StreamingRecognize call, whichever door it came through (gRPC, WebSocket): a tokio
//! task that reads the config, admits the stream, converts audio and drives the stream's
//! recognition [`Pipeline`]; its updates become responses through the stream's [`Outbound`]
//! slot. A door only turns its transport's messages into an [`Inbound`] stream and the
//! [`Outgoing`] items back into its own ([`start`]).
//!
//! ```text
//! client msgs ──► ingest (convert) ──► Pipeline ──► Update ──► Outbound ──► client
//! ```
//! The task ends when the pipeline is done after the client half-closed (OK), on a request
//! error (its status), when the client goes away (the response stream's drop guard
//! cancels it), or at shutdown (the open utterance is heard to its end, at most half the
//! drain timeout; finals are flushed, then UNAVAILABLE). A message over the transport's size
//! limit ends it with OUT_OF_RANGE (`MESSAGE_TOO_LARGE`), not as a vanished client.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::Status;
use tracing::Instrument;
use transcribe_core::StreamingPolicy;
use transcribe_proto::v1::StreamingRecognizeRequest;
use transcribe_proto::v1::StreamingRecognizeResponse;
use transcribe_proto::v1::streaming_recognize_request::StreamingRequest;

use crate::delivery::Delivery;
use crate::error::RequestError;
use crate::ingest::Ingest;
use crate::pipeline::{Emitted, Pipeline, Update, response_of};
use crate::pool::JobOutput;
use crate::recognition::{config_violation, stream_setup};
use crate::state::AppState;

/// Responses a stream may have waiting for the client. Full-policy: interim results and
/// heartbeats keep only the latest (a newer one replaces the waiting one); finals, speech
/// events and the closing status wait for room (the client's HTTP/2 window pushes back on
/// the session, never on other streams).
pub const OUTBOUND_CAPACITY: usize = 16;

/// What a stream sends its client: responses, then at most one closing status (none: OK).
pub(crate) type Outgoing = Result<StreamingRecognizeResponse, Status>;

/// A client's messages as its door delivers them. The stream's end is the client's end of
/// input (a gRPC half-close, a WebSocket `end`); an error ends the call with it
/// ([`RequestError::Cancelled`] for a client that went away).
pub(crate) type Inbound =
    Pin<Box<dyn Stream<Item = Result<StreamingRecognizeRequest, RequestError>> + Send>>;

/// A started stream: its responses, and a guard that cancels it when the door drops it
/// (the client went away).
pub(crate) struct Started {
    pub responses: ReceiverStream<Outgoing>,
    pub guard: DropGuard,
}

/// Starts one stream from `door` (its name in metrics) as a task the drain waits for. A panic
/// in it ends only this stream, with INTERNAL (not a silent OK).
pub(crate) fn start(
    state: Arc<AppState>,
    inbound: Inbound,
    door: &'static str,
    request_id: String,
    span: tracing::Span,
) -> Started {
    let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
    let cancel = CancellationToken::new();
    let guard = cancel.clone().drop_guard();
    let panic_tx = tx.clone();
    let calls = state.calls.clone();
    let task =
        calls.spawn(run(state, inbound, door, tx, cancel, request_id).instrument(span.clone()));
    tokio::spawn(
        async move {
            if let Err(error) = task.await
                && error.is_panic()
            {
                tracing::error!(message = "Stream task panicked.");
                let status = RequestError::internal("stream task panicked").to_status();
                let _ = panic_tx.send(Err(status)).await;
            }
        }
        .instrument(span),
    );
    Started {
        responses: ReceiverStream::new(rx),
        guard,
    }
}

/// Runs one stream to its end and sends its closing status.
async fn run(
    state: Arc<AppState>,
    mut inbound: Inbound,
    door: &'static str,
    tx: mpsc::Sender<Outgoing>,
    cancel: CancellationToken,
    request_id: String,
) {
    let mut out = Outbound::new(tx, request_id);
    let started = Instant::now();
    let mut call = state.metrics.call(door, "stream");
    let result = stream(&state, &mut inbound, door, &mut out, &cancel).await;
    state.call_ended(&mut call, result.as_ref().copied());
    match result {
        Ok(()) => tracing::info!(
            message = "Stream finished.",
            seconds = started.elapsed().as_secs_f64(),
            dropped_interims = out.dropped
        ),
        Err(error) => {
            error.log();
            if !matches!(error, RequestError::Cancelled) {
                out.close_with(error.to_status()).await;
            }
        }
    }
}

/// The stream once its config is accepted.
struct Session {
    pipeline: Pipeline,
    /// The converter; `None` once input is closed.
    ingest: Option<Ingest>,
    /// The status to end with after flushing (limit hit or draining).
    ending: Option<RequestError>,
}

enum Wake {
    Cancelled,
    Drain,
    DrainDeadline,
    Idle,
    Message(Box<Option<Result<StreamingRecognizeRequest, RequestError>>>),
    Job(Result<JobOutput, oneshot::error::RecvError>),
    Flushed,
}

async fn stream(
    state: &AppState,
    inbound: &mut Inbound,
    door: &'static str,
    out: &mut Outbound,
    cancel: &CancellationToken,
) -> Result<(), RequestError> {
    let idle = state.config.idle_timeout;
    // 1. The config, first and only first.
    let first = tokio::select! {
        () = cancel.cancelled() => return Err(RequestError::Cancelled),
        () = state.drain.cancelled() => return Err(RequestError::Draining),
        () = tokio::time::sleep(idle) => return Err(RequestError::AudioTimeout { limit: idle }),
        msg = inbound.next() => msg.transpose()?,
    };
    let config = match first.and_then(|m| m.streaming_request) {
        Some(StreamingRequest::StreamingConfig(config)) => config,
        Some(_) => {
            return Err(RequestError::invalid(
                "streaming_config",
                "the first message must carry streaming_config (and no audio)",
            ));
        }
        None => {
            return Err(RequestError::invalid(
                "streaming_config",
                "the stream ended before streaming_config was sent",
            ));
        }
    };
    let ready = state.ready()?;
    let setup = stream_setup(&state.config, config, &ready.models, door)?;
    // 2. Admission.
    let lease = state.admit(ready)?;
    let policy = StreamingPolicy::new(setup.policy.clone()).map_err(|e| config_violation(&e))?;
    let ingest = Ingest::new(setup.format, state.config.max_chunk_bytes)?;
    tracing::info!(
        message = "Stream admitted.",
        model = setup.pipeline.model,
        rate = setup.format.sample_rate,
        channels = setup.format.channels,
        interim = setup.policy.interim_results,
    );
    let mut session = Session {
        pipeline: Pipeline::new(policy, lease, setup.pipeline, state.metrics.clone()),
        ingest: Some(ingest),
        ending: None,
    };

    // 3. Audio until the pipeline is done.
    let mut input_open = true;
    let mut idle_deadline = tokio::time::Instant::now() + idle;
    // Set when the server drains mid-utterance: audio is still read until the utterance
    // ends or this deadline (half the drain timeout, leaving the rest for its final).
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        let dispatched = session.pipeline.dispatch();
        out.deliver(dispatched).await?;
        if session.pipeline.is_done() {
            break;
        }
        let wake = {
            let job = session.pipeline.output();
            let flush = room(&out.tx, out.pending.is_some());
            tokio::select! {
                biased;
                () = cancel.cancelled() => Wake::Cancelled,
                output = job => Wake::Job(output),
                Some(permit) = flush => {
                    // The waiting replaceable response, stamped (fields apart from `tx`).
                    if let Some((mut response, _)) = out.pending.take() {
                        if let Some(id) = out.request_id.take() {
                            response.request_id = id;
                        }
                        permit.send(Ok(response));
                    }
                    Wake::Flushed
                }
                () = state.drain.cancelled(), if input_open && drain_deadline.is_none() => {
                    Wake::Drain
                }
                () = sleep_until_some(drain_deadline), if input_open => Wake::DrainDeadline,
                () = tokio::time::sleep_until(idle_deadline), if input_open => Wake::Idle,
                msg = inbound.next(), if input_open => Wake::Message(Box::new(msg)),
            }
        };
        match wake {
            Wake::Cancelled => return Err(RequestError::Cancelled),
            Wake::Flushed => {}
            Wake::Drain if session.pipeline.is_speaking() => {
                tracing::info!(message = "Draining; finishing the current utterance.");
                drain_deadline = Some(tokio::time::Instant::now() + state.config.drain_timeout / 2);
            }
            Wake::Drain | Wake::DrainDeadline => {
                input_open = false;
                session.end_input(out, Some(RequestError::Draining)).await?;
            }
            Wake::Idle => {
                input_open = false;
                session
                    .end_input(out, Some(RequestError::AudioTimeout { limit: idle }))
                    .await?;
            }
            Wake::Job(output) => {
                let emitted = session.pipeline.on_output(output);
                out.deliver(emitted).await?;
            }
            Wake::Message(msg) => match *msg {
                Some(Err(error)) => {
                    tracing::debug!(message = "Client stream failed.", %error);
                    return Err(error);
                }
                None => {
                    input_open = false;
                    session.end_input(out, None).await?;
                }
                Some(Ok(msg)) => {
                    // Only audio counts as activity: empty chunks or bare FinalizeUtterance
                    // messages must not hold a stream (and its place) open forever.
                    if matches!(&msg.streaming_request,
                        Some(StreamingRequest::AudioContent(bytes)) if !bytes.is_empty())
                    {
                        idle_deadline = tokio::time::Instant::now() + idle;
                    }
                    let limit = state.config.max_stream_duration;
                    session.on_message(msg, out, limit).await?;
                    if session.pipeline.input_closed() {
                        session.ingest = None;
                    }
                    if session.ingest.is_none() {
                        input_open = false;
                    } else if drain_deadline.is_some() && !session.pipeline.is_speaking() {
                        // Draining and the utterance ended: take no more audio.
                        input_open = false;
                        session.end_input(out, Some(RequestError::Draining)).await?;
                    }
                }
            },
        }
    }
    out.flush_pending().await;
    match session.ending.take() {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Room in `tx` for a waiting replaceable response; pending forever when none waits.
/// Cancel-safe.
async fn room(tx: &mpsc::Sender<Outgoing>, waiting: bool) -> Option<mpsc::Permit<'_, Outgoing>> {
    match waiting {
        true => tx.reserve().await.ok(),
        false => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// Handles one client message after the config.
    async fn on_message(
        &mut self,
        msg: StreamingRecognizeRequest,
        out: &mut Outbound,
        max_duration: Duration,
    ) -> Result<(), RequestError> {
        match msg.streaming_request {
            Some(StreamingRequest::AudioContent(bytes)) => {
                let Some(ingest) = self.ingest.as_mut() else {
                    return Ok(());
                };
                let samples = ingest.push(&bytes)?;
                let received = ingest.received();
                self.pipeline.set_received(received);
                if received > max_duration {
                    return self
                        .end_input(
                            out,
                            Some(RequestError::StreamTooLong {
                                limit: max_duration,
                            }),
                        )
                        .await;
                }
                let emitted = self.pipeline.push_audio(&samples);
                out.deliver(emitted).await
            }
            Some(StreamingRequest::FinalizeUtterance(_)) => {
                let emitted = self.pipeline.finalize();
                out.deliver(emitted).await
            }
            Some(StreamingRequest::StreamingConfig(_)) => Err(RequestError::invalid(
                "streaming_config",
                "streaming_config may only be sent once, in the first message",
            )),
            None => Err(RequestError::invalid("streaming_request", "empty message")),
        }
    }

    /// No more audio will be taken: flush the converter, end the pipeline's input and
    /// remember the status to end with.
    async fn end_input(
        &mut self,
        out: &mut Outbound,
        ending: Option<RequestError>,
    ) -> Result<(), RequestError> {
        if ending.is_some() && self.ending.is_none() {
            self.ending = ending;
        }
        let tail = self.ingest.take().map(Ingest::finish).unwrap_or_default();
        let emitted = self.pipeline.end_of_stream(&tail);
        out.deliver(emitted).await
    }
}

/// The stream's side of the outbound channel, with its one slot for a replaceable response.
pub(crate) struct Outbound {
    tx: mpsc::Sender<Outgoing>,
    /// The newest replaceable response not yet sent (interim or heartbeat), and its class.
    pending: Option<(StreamingRecognizeResponse, Delivery)>,
    /// Put on the first response that leaves.
    request_id: Option<String>,
    /// Replaceable responses dropped before they could be sent.
    dropped: u64,
}

impl Outbound {
    fn new(tx: mpsc::Sender<Outgoing>, request_id: String) -> Self {
        Self {
            tx,
            pending: None,
            request_id: Some(request_id),
            dropped: 0,
        }
    }

    /// Delivers a pipeline step's updates in order, then ends on its failure.
    async fn deliver(&mut self, emitted: Emitted) -> Result<(), RequestError> {
        for update in emitted.updates {
            self.push(update).await?;
        }
        emitted.failure.map_or(Ok(()), Err)
    }

    /// One update as a StreamingRecognizeResponse.
    async fn push(&mut self, update: Update) -> Result<(), RequestError> {
        let delivery = update.delivery;
        let response = response_of!(StreamingRecognizeResponse, update);
        if delivery.is_replaceable() {
            self.offer(response, delivery);
            Ok(())
        } else {
            self.send(response, delivery).await
        }
    }

    fn stamp(&mut self, response: &mut StreamingRecognizeResponse) {
        if let Some(id) = self.request_id.take() {
            response.request_id = id;
        }
    }

    /// Offers a replaceable response: it replaces any waiting one and goes out now if there
    /// is room.
    fn offer(&mut self, response: StreamingRecognizeResponse, delivery: Delivery) {
        if self.pending.replace((response, delivery)).is_some() {
            self.dropped += 1;
        }
        self.try_flush();
    }

    fn try_flush(&mut self) {
        let Some((mut response, delivery)) = self.pending.take() else {
            return;
        };
        self.stamp(&mut response);
        match self.tx.try_send(Ok(response)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(Ok(mut response))) => {
                if !response.request_id.is_empty() {
                    self.request_id = Some(std::mem::take(&mut response.request_id));
                }
                self.pending = Some((response, delivery));
            }
            // Closed: the client is gone; the session notices through its cancel token.
            Err(_) => {}
        }
    }

    /// Sends a response that must not be dropped, waiting for room. A waiting replaceable
    /// response it supersedes is discarded; any other is sent first.
    async fn send(
        &mut self,
        mut response: StreamingRecognizeResponse,
        delivery: Delivery,
    ) -> Result<(), RequestError> {
        if let Some((_, waiting)) = &self.pending {
            if delivery.supersedes(*waiting) {
                self.pending = None;
                self.dropped += 1;
            } else {
                self.flush_pending().await;
            }
        }
        self.stamp(&mut response);
        self.tx
            .send(Ok(response))
            .await
            .map_err(|_| RequestError::Cancelled)
    }

    /// Sends the waiting replaceable response, if any.
    async fn flush_pending(&mut self) {
        if let Some((mut response, _)) = self.pending.take() {
            self.stamp(&mut response);
            let _ = self.tx.send(Ok(response)).await;
        }
    }

    /// Ends the call with `status`.
    async fn close_with(&mut self, status: Status) {
        let _ = self.tx.send(Err(status)).await;
    }
}
