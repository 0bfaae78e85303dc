//! The WebSocket door (docs/WEBSOCKET.md), for browsers, which cannot open a gRPC
//! bidirectional stream:
//! - `/v1/stream`: a StreamingRecognize session ([`crate::session`], the same task a gRPC
//!   stream runs); this module only turns WebSocket messages into session requests and
//!   responses into proto3 JSON text messages;
//! - `/v1/captions`: a StreamCaptions subscription ([`service::subscribe_captions`]).
//!
//! A call that fails ends with a JSON error message and close code 4000 + its gRPC status
//! code ([`error::to_websocket`]). Tokens come in the `Authorization` header or, since
//! browsers cannot set headers on a WebSocket, in the `token` query parameter.

use std::ops::ControlFlow;
use std::sync::Arc;

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use transcribe_proto::json::{from_json, to_json};
use transcribe_proto::v1::streaming_recognize_request::StreamingRequest;
use transcribe_proto::v1::{
    FinalizeUtterance, StreamCaptionsRequest, StreamingRecognitionConfig, StreamingRecognizeRequest,
};

use crate::error::{self, RequestError};
use crate::rest::{TokenQuery, authorize};
use crate::service;
use crate::session;
use crate::state::AppState;

/// The door's name in metrics.
const DOOR: &str = "websocket";

/// Client messages the reader may have waiting for the session.
const INBOUND_CAPACITY: usize = 8;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/stream", get(stream))
        .route("/v1/captions", get(captions))
        .with_state(state)
}

/// The upgrade, with the transport's message limit set to the server's.
fn upgrade(state: &AppState, ws: WebSocketUpgrade) -> WebSocketUpgrade {
    let limit = state.config.max_message_bytes;
    ws.max_message_size(limit).max_frame_size(limit)
}

async fn stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    // Refusals are answered after the upgrade, so that a browser sees the reason.
    let admitted =
        authorize(&state, &headers, query.token.as_deref()).and_then(|()| state.ready().map(drop));
    upgrade(&state, ws).on_upgrade(move |socket| run_stream(state, socket, admitted))
}

async fn captions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let admitted = authorize(&state, &headers, query.token.as_deref());
    upgrade(&state, ws).on_upgrade(move |socket| run_captions(state, socket, admitted))
}

/// Sends the error message and the close frame for `status`.
async fn close_with(socket: &mut WebSocket, status: &Status) {
    let (code, reason, body) = error::to_websocket(status);
    let _ = socket.send(Message::Text(body.to_string().into())).await;
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// A normal close (1000).
async fn close_ok(socket: &mut WebSocket) {
    let frame = CloseFrame {
        code: 1000,
        reason: "".into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// Sends the next item of a call's responses as proto3 JSON, or ends the call: with its
/// status, with 1000 at its end, or silently when the client is gone (`Break`).
async fn forward<M: prost::Message + prost::Name>(
    socket: &mut WebSocket,
    item: Option<Result<M, Status>>,
) -> ControlFlow<()> {
    let status = match item {
        Some(Ok(message)) => match to_json(&message) {
            Ok(text) => {
                return match socket.send(Message::Text(text.into())).await {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                };
            }
            Err(e) => RequestError::internal(e.to_string()).to_status(),
        },
        Some(Err(status)) => status,
        None => {
            close_ok(socket).await;
            return ControlFlow::Break(());
        }
    };
    close_with(socket, &status).await;
    ControlFlow::Break(())
}

/// Refuses a call before it starts: counted and logged like the gRPC door's refusals.
async fn refuse(state: &AppState, socket: &mut WebSocket, error: &RequestError) {
    state.count_refusal(error);
    error.log();
    close_with(socket, &error.to_status()).await;
}

async fn run_stream(
    state: Arc<AppState>,
    mut socket: WebSocket,
    admitted: Result<(), RequestError>,
) {
    if let Err(error) = admitted {
        return refuse(&state, &mut socket, &error).await;
    }
    let request_id = state.request_id();
    let span = tracing::info_span!("stream", request_id = %request_id, door = DOOR);
    let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
    let started = session::start(
        state.clone(),
        Box::pin(ReceiverStream::new(rx)),
        DOOR,
        request_id,
        span,
    );
    // Dropped when this function returns: a client gone cancels its session.
    let _guard = started.guard;
    let mut responses = started.responses;
    let mut reader = Reader {
        configured: false,
        limit: state.config.max_message_bytes,
    };
    // Reading and writing never wait on each other (a session waiting for room for a final
    // must still get the client's messages, and the other way round): a client message is
    // read only when the previous one has been handed to the session.
    let mut tx = Some(tx);
    let mut pending: Option<Inbound> = None;
    loop {
        // A sender only while a message waits for room (`reserve` then owns it).
        let sender = pending.as_ref().and(tx.clone());
        tokio::select! {
            response = responses.next() => {
                if forward(&mut socket, response).await.is_break() {
                    return;
                }
            }
            permit = reserve(sender), if pending.is_some() => {
                match (permit, pending.take()) {
                    (Some(permit), Some(item)) => {
                        let failed = item.is_err();
                        permit.send(item);
                        if failed {
                            tx = None;
                        }
                    }
                    // The session has ended; its status is on its way.
                    _ => tx = None,
                }
            }
            message = socket.recv(), if pending.is_none() && tx.is_some() => {
                match reader.read(message) {
                    Read::Request(item) => pending = Some(*item),
                    Read::End => tx = None,
                    Read::Nothing => {}
                }
            }
        }
    }
}

/// A client message for the session.
type Inbound = Result<StreamingRecognizeRequest, RequestError>;

/// Room for one message to the session; `None` when it is gone. Cancel-safe.
async fn reserve(sender: Option<mpsc::Sender<Inbound>>) -> Option<mpsc::OwnedPermit<Inbound>> {
    sender?.reserve_owned().await.ok()
}

/// Turns the client's WebSocket messages into session requests.
struct Reader {
    configured: bool,
    limit: usize,
}

/// What one WebSocket message means for the session.
enum Read {
    /// A request (or the error that ends the call).
    Request(Box<Inbound>),
    /// `{"type": "end"}`: the client's end of input.
    End,
    /// A ping or pong.
    Nothing,
}

impl Reader {
    fn read(&mut self, message: Option<Result<Message, axum::Error>>) -> Read {
        let request = match message {
            Some(Ok(Message::Binary(bytes))) => Ok(StreamingRequest::AudioContent(bytes.into())),
            Some(Ok(Message::Text(text))) if !self.configured => {
                self.configured = true;
                from_json::<StreamingRecognitionConfig>(text.as_str())
                    .map(StreamingRequest::StreamingConfig)
                    .map_err(|e| {
                        RequestError::invalid(
                            "streaming_config",
                            format!(
                                "the first message must be a StreamingRecognitionConfig in \
                                 proto3 JSON: {e}"
                            ),
                        )
                    })
            }
            Some(Ok(Message::Text(text))) => match control(text.as_str()) {
                Some(Control::Finalize) => {
                    Ok(StreamingRequest::FinalizeUtterance(FinalizeUtterance {}))
                }
                Some(Control::End) => return Read::End,
                None => Err(RequestError::invalid(
                    "message",
                    "a text message after the config must be {\"type\": \"finalize\"} or \
                     {\"type\": \"end\"}; audio goes in binary messages",
                )),
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => return Read::Nothing,
            Some(Err(e)) if too_large(&e) => {
                Err(RequestError::MessageTooLarge { limit: self.limit })
            }
            // Closed or broken: the client went away.
            Some(Ok(Message::Close(_)) | Err(_)) | None => Err(RequestError::Cancelled),
        };
        Read::Request(Box::new(request.map(|r| StreamingRecognizeRequest {
            streaming_request: Some(r),
        })))
    }
}

/// Whether a read failed because a message or frame exceeded the limit.
fn too_large(error: &axum::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(e) = source {
        if let Some(tungstenite::Error::Capacity(_)) = e.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

enum Control {
    Finalize,
    End,
}

/// `{"type": "finalize"}` or `{"type": "end"}`.
fn control(text: &str) -> Option<Control> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    match value.as_object()?.get("type")?.as_str()? {
        "finalize" => Some(Control::Finalize),
        "end" => Some(Control::End),
        _ => None,
    }
}

async fn run_captions(
    state: Arc<AppState>,
    mut socket: WebSocket,
    admitted: Result<(), RequestError>,
) {
    if let Err(error) = admitted {
        return refuse(&state, &mut socket, &error).await;
    }
    let idle = state.config.idle_timeout;
    let first = tokio::select! {
        message = socket.recv() => message,
        () = tokio::time::sleep(idle) => {
            let error = RequestError::AudioTimeout { limit: idle };
            return close_with(&mut socket, &error.to_status()).await;
        }
    };
    let request = match first {
        Some(Ok(Message::Text(text))) => {
            from_json::<StreamCaptionsRequest>(text.as_str()).map_err(|e| {
                RequestError::invalid(
                    "request",
                    format!(
                        "the first message must be a StreamCaptionsRequest in proto3 JSON: {e}"
                    ),
                )
            })
        }
        Some(Ok(_)) => Err(RequestError::invalid(
            "request",
            "the first message must be a StreamCaptionsRequest in proto3 JSON (a text message)",
        )),
        Some(Err(_)) | None => return,
    };
    let request_id = state.request_id();
    let subscription =
        request.and_then(|request| service::subscribe_captions(&state, &request, &request_id));
    let mut subscription = match subscription {
        Ok(stream) => stream,
        Err(error) => return close_with(&mut socket, &error.to_status()).await,
    };
    loop {
        tokio::select! {
            response = subscription.next() => {
                if forward(&mut socket, response).await.is_break() {
                    return;
                }
            }
            // Nothing else is read; a close or a broken connection ends the subscription.
            message = socket.recv() => {
                if !matches!(message, Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_) | Message::Pong(_)))) {
                    return;
                }
            }
        }
    }
}
