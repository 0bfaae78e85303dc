//! Errors of the server, and the one place where request errors become gRPC statuses
//! ([`RequestError::to_status`]).
//!
//! Codes follow the API's contract (`transcribe.proto`): INVALID_ARGUMENT with `BadRequest`
//! field violations for bad config or audio, NOT_FOUND for an unknown model (listing the valid
//! names), OUT_OF_RANGE for stream limits (with `ErrorInfo` reasons), RESOURCE_EXHAUSTED with
//! `RetryInfo` for overload, UNAVAILABLE while loading or draining, and INTERNAL with a generic
//! message (details go to the log, never to the client).

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use transcribe_core::EngineError;
use transcribe_core::policy::FailureKind;

/// `ErrorInfo.domain` of every error this server sends.
pub const ERROR_DOMAIN: &str = "transcribe.v1";

/// Retry hint sent with RESOURCE_EXHAUSTED: long enough for a short stream to finish.
pub const OVERLOAD_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Retry hint sent with UNAVAILABLE while the model loads.
pub const LOADING_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why one request (a stream or a unary call) failed. Each variant maps to exactly one gRPC
/// code in [`RequestError::to_status`].
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A request field is invalid (bad config, unsupported or inconsistent audio format, a
    /// chunk that is not whole frames or too large, a message out of order). The client must
    /// fix the request: INVALID_ARGUMENT with a field violation.
    #[error("invalid {field}: {description}")]
    InvalidArgument {
        /// The offending field, as a path in the request (`streaming_config.config.model`).
        field: String,
        /// What is wrong and what would be accepted.
        description: String,
    },
    /// The requested model is not served here: NOT_FOUND listing the valid names.
    #[error("unknown model {name:?}; this server has: {}", valid.join(", "))]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The names ListModels returns.
        valid: Vec<String>,
    },
    /// The request asks for something this server does not allow (a server-side audio
    /// URI): PERMISSION_DENIED. Send the audio inline instead.
    #[error("not allowed: {what}")]
    PermissionDenied {
        /// What was refused.
        what: String,
    },
    /// The call has no valid bearer token (`--auth-token-file`): missing, not
    /// `Bearer <token>`, or not accepted. UNAUTHENTICATED with one generic message for every
    /// reason (the reason is only logged; the token never is). Send
    /// `authorization: Bearer <token>` with a token from the server's token file.
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// Why, for the server log.
        reason: &'static str,
    },
    /// The stream exceeded its maximum audio duration: OUT_OF_RANGE with reason
    /// `STREAM_DURATION_EXCEEDED`. Reconnect with `stream_start_offset` to continue.
    #[error("stream exceeded the maximum audio duration of {}s", limit.as_secs_f64())]
    StreamTooLong {
        /// The server's limit.
        limit: Duration,
    },
    /// The client sent nothing for too long: OUT_OF_RANGE with reason `AUDIO_TIMEOUT`.
    #[error("no audio received for {}s", limit.as_secs_f64())]
    AudioTimeout {
        /// The server's idle limit.
        limit: Duration,
    },
    /// Too many concurrent streams, queued decodes or caption subscribers:
    /// RESOURCE_EXHAUSTED with `RetryInfo` and the [`Capacity`]'s `ErrorInfo` reason.
    /// Retrying later may succeed.
    #[error("server overloaded: {reason}")]
    Overloaded {
        /// Which limit was hit.
        capacity: Capacity,
        /// The limit in words (sent to the client).
        reason: String,
    },
    /// A unary Recognize call sent more audio than `--max-unary-audio`: OUT_OF_RANGE with
    /// reason `UNARY_AUDIO_TOO_LONG`. Send shorter audio or use StreamingRecognize.
    #[error(
        "the audio is {:.1}s long; Recognize takes at most {}s (use StreamingRecognize for longer audio)",
        got.as_secs_f64(),
        limit.as_secs_f64()
    )]
    UnaryAudioTooLong {
        /// The server's limit.
        limit: Duration,
        /// The audio's duration.
        got: Duration,
    },
    /// A StreamingRecognize message was larger than `--max-message-bytes`: OUT_OF_RANGE
    /// with reason `MESSAGE_TOO_LARGE`. Send smaller chunks.
    #[error("a message exceeded the server's limit of {limit} bytes")]
    MessageTooLarge {
        /// The server's limit in bytes.
        limit: usize,
    },
    /// The server is still loading its model: UNAVAILABLE, retry shortly.
    #[error("the model is still loading")]
    Loading,
    /// The server is shutting down: UNAVAILABLE, retry against another instance or later.
    #[error("the server is shutting down")]
    Draining,
    /// The caption source asked for is not configured: NOT_FOUND listing the configured
    /// names (`--source`). Ask for one of them, or empty for the default.
    #[error("unknown caption source {name:?}; this server has: {}", if valid.is_empty() { "none (start it with --source)".to_owned() } else { valid.join(", ") })]
    UnknownSource {
        /// The name asked for.
        name: String,
        /// The configured source names.
        valid: Vec<String>,
    },
    /// A caption subscriber fell so far behind that `capacity` undelivered finals piled up:
    /// RESOURCE_EXHAUSTED with reason `SUBSCRIBER_TOO_SLOW`. Read faster; resubscribing with
    /// `history_size` recovers recent finals.
    #[error("caption subscriber of {name:?} fell behind by {capacity} messages")]
    SubscriberTooSlow {
        /// The source.
        name: String,
        /// The subscriber queue's capacity.
        capacity: usize,
    },
    /// A caption source cannot produce audio (its file cannot be decoded, its device is
    /// gone): UNAVAILABLE (sent in band as the source's status). The server retries where
    /// that can help.
    #[error("caption source {name:?} is unavailable: {reason}")]
    SourceUnavailable {
        /// The source.
        name: String,
        /// Why.
        reason: String,
    },
    /// The request was cancelled (client gone or shutdown): CANCELLED.
    #[error("the request was cancelled")]
    Cancelled,
    /// Anything else. INTERNAL with a generic message; `detail` is only logged.
    #[error("internal error: {detail}")]
    Internal {
        /// What went wrong (logged, never sent).
        detail: String,
    },
}

/// A capacity limit behind [`RequestError::Overloaded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// `--max-streams` streams (and unary calls) are open.
    Streams,
    /// `--queue-depth` decodes wait for a worker.
    Queue,
    /// Decodes wait longer than `--admission-wait` for a worker.
    Compute,
    /// `--max-subscribers` subscribers follow the caption source.
    Subscribers,
}

impl Capacity {
    /// The `ErrorInfo.reason` sent with RESOURCE_EXHAUSTED.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Streams => "TOO_MANY_STREAMS",
            Self::Queue => "QUEUE_FULL",
            Self::Compute => "DECODES_BEHIND",
            Self::Subscribers => "TOO_MANY_SUBSCRIBERS",
        }
    }
}

impl RequestError {
    /// An [`RequestError::InvalidArgument`] for `field`.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            description: description.into(),
        }
    }

    /// An [`RequestError::Internal`] with `detail` (logged, not sent).
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::Internal {
            detail: detail.into(),
        }
    }

    /// The gRPC status for this error: the single mapping from server errors to codes.
    pub fn to_status(&self) -> Status {
        match self {
            Self::InvalidArgument { field, description } => {
                let details = ErrorDetails::with_bad_request_violation(field, description);
                Status::with_error_details(Code::InvalidArgument, self.to_string(), details)
            }
            Self::UnknownModel { name, valid } => {
                let mut details = ErrorDetails::new();
                details.set_error_info(
                    "MODEL_NOT_FOUND",
                    ERROR_DOMAIN,
                    HashMap::from([
                        ("model".to_owned(), name.clone()),
                        ("available".to_owned(), valid.join(",")),
                    ]),
                );
                details.set_resource_info("model", name, "", "see ListModels");
                Status::with_error_details(Code::NotFound, self.to_string(), details)
            }
            Self::PermissionDenied { .. } => Status::permission_denied(self.to_string()),
            Self::Unauthenticated { .. } => {
                Status::unauthenticated("missing or invalid bearer token")
            }
            Self::StreamTooLong { limit } => out_of_range(self, "STREAM_DURATION_EXCEEDED", *limit),
            Self::AudioTimeout { limit } => out_of_range(self, "AUDIO_TIMEOUT", *limit),
            Self::Overloaded { capacity, .. } => {
                let mut details = ErrorDetails::with_retry_info(Some(OVERLOAD_RETRY_AFTER));
                details.set_error_info(capacity.reason(), ERROR_DOMAIN, HashMap::new());
                Status::with_error_details(Code::ResourceExhausted, self.to_string(), details)
            }
            Self::UnaryAudioTooLong { limit, .. } => {
                out_of_range(self, "UNARY_AUDIO_TOO_LONG", *limit)
            }
            Self::MessageTooLarge { limit } => {
                let details = ErrorDetails::with_error_info(
                    "MESSAGE_TOO_LARGE",
                    ERROR_DOMAIN,
                    HashMap::from([("limit_bytes".to_owned(), limit.to_string())]),
                );
                Status::with_error_details(Code::OutOfRange, self.to_string(), details)
            }
            Self::Loading => {
                let details = ErrorDetails::with_retry_info(Some(LOADING_RETRY_AFTER));
                Status::with_error_details(Code::Unavailable, self.to_string(), details)
            }
            Self::Draining => {
                let details =
                    ErrorDetails::with_error_info("DRAINING", ERROR_DOMAIN, HashMap::new());
                Status::with_error_details(Code::Unavailable, self.to_string(), details)
            }
            Self::UnknownSource { name, valid } => {
                let mut details = ErrorDetails::new();
                details.set_error_info(
                    "SOURCE_NOT_FOUND",
                    ERROR_DOMAIN,
                    HashMap::from([
                        ("source".to_owned(), name.clone()),
                        ("available".to_owned(), valid.join(",")),
                    ]),
                );
                details.set_resource_info("caption source", name, "", "see --source");
                Status::with_error_details(Code::NotFound, self.to_string(), details)
            }
            Self::SubscriberTooSlow { capacity, .. } => {
                let details = ErrorDetails::with_error_info(
                    "SUBSCRIBER_TOO_SLOW",
                    ERROR_DOMAIN,
                    HashMap::from([("capacity".to_owned(), capacity.to_string())]),
                );
                Status::with_error_details(Code::ResourceExhausted, self.to_string(), details)
            }
            Self::SourceUnavailable { .. } => Status::unavailable(self.to_string()),
            Self::Cancelled => Status::cancelled(self.to_string()),
            Self::Internal { .. } => Status::internal("internal error; see the server log"),
        }
    }
}

/// How the HTTP doors (REST) answer a [`RequestError`]: status, OpenAI error `type`, `code`
/// and `param`, and a `Retry-After` in seconds. The message is the error's text (INTERNAL's
/// is generic, as for gRPC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The HTTP status code.
    pub status: u16,
    /// OpenAI's error `type`.
    pub kind: &'static str,
    /// OpenAI's error `code`, when there is one.
    pub code: Option<String>,
    /// The request field at fault, when there is one.
    pub param: Option<String>,
    /// The message.
    pub message: String,
    /// Seconds to wait before retrying (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl RequestError {
    /// The HTTP answer for this error: the one mapping the REST door uses, next to
    /// [`RequestError::to_status`] for gRPC. `param` names the request field at fault in
    /// the door's own terms (for an invalid argument).
    pub fn to_http(&self, param: Option<String>) -> HttpError {
        let invalid = "invalid_request_error";
        let (status, kind, code, retry_after) = match self {
            Self::InvalidArgument { .. } => (400, invalid, None, None),
            Self::UnknownModel { .. } => (404, invalid, Some("model_not_found"), None),
            Self::UnknownSource { .. } => (404, invalid, Some("source_not_found"), None),
            Self::PermissionDenied { .. } => (403, "permission_error", None, None),
            Self::Unauthenticated { .. } => (401, invalid, Some("invalid_api_key"), None),
            Self::StreamTooLong { .. } | Self::AudioTimeout { .. } => (400, invalid, None, None),
            Self::UnaryAudioTooLong { .. } => (413, invalid, Some("audio_too_long"), None),
            Self::MessageTooLarge { .. } => (413, invalid, Some("file_too_large"), None),
            Self::Overloaded { capacity, .. } => (
                429,
                "rate_limit_error",
                Some(capacity.reason()),
                Some(OVERLOAD_RETRY_AFTER.as_secs()),
            ),
            Self::SubscriberTooSlow { .. } => (429, "rate_limit_error", None, None),
            Self::Loading => (
                503,
                "server_error",
                Some("loading"),
                Some(LOADING_RETRY_AFTER.as_secs()),
            ),
            Self::Draining => (503, "server_error", Some("draining"), None),
            Self::SourceUnavailable { .. } => (503, "server_error", None, None),
            // The client is gone; nobody reads this (nginx's "client closed request").
            Self::Cancelled => (499, invalid, None, None),
            Self::Internal { .. } => (500, "server_error", None, None),
        };
        let message = match self {
            Self::Internal { .. } => "internal error; see the server log".to_owned(),
            Self::Unauthenticated { .. } => "missing or invalid bearer token".to_owned(),
            other => other.to_string(),
        };
        let param = match self {
            Self::UnknownModel { .. } => Some("model".to_owned()),
            Self::UnaryAudioTooLong { .. } | Self::MessageTooLarge { .. } => {
                Some("file".to_owned())
            }
            Self::InvalidArgument { field, .. } => param.or_else(|| Some(field.clone())),
            _ => None,
        };
        HttpError {
            status,
            kind,
            code: code.map(str::to_owned),
            param,
            message,
            retry_after,
        }
    }
}

fn out_of_range(error: &RequestError, reason: &str, limit: Duration) -> Status {
    let details = ErrorDetails::with_error_info(
        reason,
        ERROR_DOMAIN,
        HashMap::from([(
            "limit_seconds".to_owned(),
            format!("{}", limit.as_secs_f64()),
        )]),
    );
    Status::with_error_details(Code::OutOfRange, error.to_string(), details)
}

impl From<RequestError> for Status {
    fn from(error: RequestError) -> Self {
        error.to_status()
    }
}

impl RequestError {
    /// The one mapping from a failed decode to a request error, for every door (streams,
    /// caption sources, unary calls):
    /// - cancelled: only the pool's shutdown cancels a decode while its call still holds
    ///   its lease (a call that ends drops the lease first), so the server is draining:
    ///   [`RequestError::Draining`];
    /// - invalid options: the request asked for something the model cannot do:
    ///   [`RequestError::InvalidArgument`] on `config_field`, the path of the request's
    ///   recognition config;
    /// - an inference failure: [`RequestError::Internal`] (`detail` is only logged).
    pub fn decode_failed(failure: FailureKind, detail: String, config_field: &str) -> Self {
        match failure {
            FailureKind::Cancelled => Self::Draining,
            FailureKind::InvalidOptions => Self::invalid(config_field, detail),
            FailureKind::Inference => Self::internal(detail),
        }
    }

    /// [`RequestError::decode_failed`] for an engine's error.
    pub fn from_engine(error: &EngineError, config_field: &str) -> Self {
        let detail = match error {
            EngineError::InvalidOptions(reason) => reason.clone(),
            other => other.to_string(),
        };
        Self::decode_failed(FailureKind::from(error), detail, config_field)
    }

    /// The reason a refused call is counted under (`TOO_MANY_STREAMS`, `QUEUE_FULL`,
    /// `DECODES_BEHIND`, `TOO_MANY_SUBSCRIBERS`, `LOADING`, `DRAINING`, `UNAUTHENTICATED`), or `None` for an
    /// error that is not a refusal.
    pub fn refusal_reason(&self) -> Option<&'static str> {
        match self {
            Self::Overloaded { capacity, .. } => Some(capacity.reason()),
            Self::Loading => Some("LOADING"),
            Self::Draining => Some("DRAINING"),
            Self::Unauthenticated { .. } => Some("UNAUTHENTICATED"),
            _ => None,
        }
    }

    /// Logs a failed request at a level that fits who is at fault.
    pub fn log(&self) {
        match self {
            Self::Internal { detail } => {
                tracing::error!(message = "Request failed.", %detail);
            }
            Self::Cancelled => tracing::debug!(message = "Request cancelled."),
            other => tracing::info!(message = "Request refused.", error = %other),
        }
    }
}

/// Why the server could not start or stopped abnormally. `main` prints it and exits 2.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A model could not be resolved or loaded; the server stops. Check the name or path,
    /// or fetch the model first (`transcribe models pull NAME`).
    #[error("cannot load model {name}: {reason}")]
    ModelLoad {
        /// The model name as configured.
        name: String,
        /// Why.
        reason: String,
    },
    /// The inference workers could not be started (out of memory for decoding states).
    #[error("cannot start inference worker: {0}")]
    Worker(String),
    /// rustls refused the TLS certificate and key (checked at start-up already, so rare).
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// Reflection could not be built from the descriptor sets (a build problem).
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    /// An I/O error on the listener.
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
}

/// Close codes of the WebSocket door: 4000 + the gRPC status code (docs/WEBSOCKET.md).
pub const WS_CLOSE_BASE: u16 = 4000;

/// How a WebSocket call ends with `status`: the close code, the close reason (the ErrorInfo
/// reason, or the code's name; a close reason is at most 123 bytes) and the JSON error
/// message sent before the close. Derived from the gRPC status so that both doors say the
/// same thing.
pub fn to_websocket(status: &Status) -> (u16, String, serde_json::Value) {
    let details = status.get_error_details();
    let name = format!("{:?}", status.code());
    let status_name = screaming_snake(&name);
    let reason = details
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default();
    let field = details
        .bad_request()
        .and_then(|b| b.field_violations.first())
        .map(|v| v.field.clone())
        .unwrap_or_default();
    let mut error = serde_json::json!({
        "code": status.code() as i32,
        "status": status_name,
        "message": status.message(),
        "reason": reason,
        "field": field,
    });
    if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
        error["retryAfter"] = format!("{}s", delay.as_secs_f64()).into();
    }
    let close_reason = if reason.is_empty() {
        status_name
    } else {
        reason
    };
    (
        WS_CLOSE_BASE + status.code() as u16,
        close_reason,
        serde_json::json!({ "error": error }),
    )
}

/// `InvalidArgument` → `INVALID_ARGUMENT`.
fn screaming_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_code() {
        let cases = [
            (
                RequestError::invalid("audio_content", "odd length"),
                Code::InvalidArgument,
            ),
            (
                RequestError::UnknownModel {
                    name: "x".into(),
                    valid: vec!["tiny.en".into()],
                },
                Code::NotFound,
            ),
            (
                RequestError::PermissionDenied { what: "uri".into() },
                Code::PermissionDenied,
            ),
            (
                RequestError::Unauthenticated {
                    reason: "unknown token",
                },
                Code::Unauthenticated,
            ),
            (
                RequestError::StreamTooLong {
                    limit: Duration::from_secs(5),
                },
                Code::OutOfRange,
            ),
            (
                RequestError::AudioTimeout {
                    limit: Duration::from_secs(5),
                },
                Code::OutOfRange,
            ),
            (
                RequestError::Overloaded {
                    capacity: Capacity::Streams,
                    reason: "streams".into(),
                },
                Code::ResourceExhausted,
            ),
            (
                RequestError::UnaryAudioTooLong {
                    limit: Duration::from_secs(600),
                    got: Duration::from_secs(601),
                },
                Code::OutOfRange,
            ),
            (
                RequestError::MessageTooLarge { limit: 1_024 },
                Code::OutOfRange,
            ),
            (RequestError::Loading, Code::Unavailable),
            (RequestError::Draining, Code::Unavailable),
            (
                RequestError::UnknownSource {
                    name: "hall".into(),
                    valid: vec!["room".into()],
                },
                Code::NotFound,
            ),
            (
                RequestError::SubscriberTooSlow {
                    name: "room".into(),
                    capacity: 4,
                },
                Code::ResourceExhausted,
            ),
            (
                RequestError::SourceUnavailable {
                    name: "room".into(),
                    reason: "gone".into(),
                },
                Code::Unavailable,
            ),
            (RequestError::Cancelled, Code::Cancelled),
            (RequestError::internal("secret detail"), Code::Internal),
        ];
        for (error, code) in cases {
            assert_eq!(error.to_status().code(), code, "{error}");
        }
    }

    #[test]
    fn details_are_attached() {
        let status = RequestError::invalid("streaming_config", "sent twice").to_status();
        let details = status.get_error_details();
        let violations = details
            .bad_request()
            .map(|b| b.field_violations.clone())
            .unwrap_or_default();
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].field, "streaming_config");

        let status = RequestError::Overloaded {
            capacity: Capacity::Queue,
            reason: "queue".into(),
        }
        .to_status();
        assert_eq!(
            status
                .get_error_details()
                .error_info()
                .map(|e| e.reason.clone()),
            Some("QUEUE_FULL".to_owned())
        );
        let retry = status
            .get_error_details()
            .retry_info()
            .and_then(|r| r.retry_delay);
        assert_eq!(retry, Some(OVERLOAD_RETRY_AFTER));

        let status = RequestError::UnknownModel {
            name: "huge".into(),
            valid: vec!["tiny.en".into(), "base".into()],
        }
        .to_status();
        assert!(
            status.message().contains("tiny.en, base"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn websocket_close_follows_the_grpc_status() {
        let (code, reason, body) = to_websocket(&RequestError::Draining.to_status());
        assert_eq!((code, reason.as_str()), (4014, "DRAINING"));
        assert_eq!(body["error"]["status"], "UNAVAILABLE");
        let invalid = RequestError::invalid("config.model", "bad").to_status();
        let (code, reason, body) = to_websocket(&invalid);
        assert_eq!((code, reason.as_str()), (4003, "INVALID_ARGUMENT"));
        assert_eq!(body["error"]["field"], "config.model");
        let (code, _, body) = to_websocket(&RequestError::Loading.to_status());
        assert_eq!(code, 4014);
        assert!(body["error"]["retryAfter"].is_string(), "{body}");
    }

    #[test]
    fn internal_detail_stays_in_the_log() {
        let status = RequestError::internal("secret detail").to_status();
        assert!(!status.message().contains("secret"));
    }
}
