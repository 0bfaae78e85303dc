//! The HTTP door, on the gRPC port (HTTP/1.1 and HTTP/2, the same TLS): an OpenAI-compatible
//! REST API and HTTP health.
//!
//! - `POST /v1/audio/transcriptions`, `POST /v1/audio/translations`: multipart as OpenAI
//!   defines them (`file`, `model`, `language`, `prompt`, `response_format`, `temperature`,
//!   `timestamp_granularities[]`, `stream`), decoded by the same code as Recognize and run
//!   through the same whole-audio recognition ([`crate::unary`]).
//! - `GET /v1/models`: the served models in OpenAI's list shape.
//! - `GET /healthz` (the process answers) and `GET /readyz` (models loaded, not draining).
//! - `GET /metrics`: Prometheus metrics ([`crate::metrics`]).
//!
//! Errors come back in OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`)
//! with the status of [`RequestError::to_http`]. With `--auth-token-file`, every `/v1/`
//! route and `/metrics` need `Authorization: Bearer <token>`; the health routes never do. Uploads are
//! bounded by `--max-message-bytes` (as Recognize's content), their audio by
//! `--max-unary-audio`. A client that disconnects drops the handler's future, which drops
//! the pool lease and cancels the decode.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use transcribe_core::{Segment, subtitles};
use transcribe_proto::v1::{RecognitionConfig, Task};

use crate::error::RequestError;
use crate::recognition::parse_recognition;
use crate::state::AppState;
use crate::unary::{self, Recognized};

/// OpenAI's model names, answered by the server's default model.
pub const OPENAI_MODEL_NAMES: [&str; 3] =
    ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"];

/// The HTTP routes, to merge with the gRPC services' router.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_message_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/translations", post(translations))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.ready() {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => error_response(&error, None),
    }
}

/// The OpenAI-shaped error response for `error`.
pub(crate) fn error_response(error: &RequestError, param: Option<String>) -> Response {
    let http = error.to_http(param);
    let status = StatusCode::from_u16(http.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({
        "error": {
            "message": http.message,
            "type": http.kind,
            "param": http.param,
            "code": http.code,
        }
    });
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = http.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The `token` query parameter, for callers that cannot set headers (browsers opening a
/// WebSocket).
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct TokenQuery {
    pub token: Option<String>,
}

/// Refuses a `/v1/` call without an accepted bearer token (when the server has tokens): in
/// the `Authorization` header, or in `query_token` where the door takes one.
pub(crate) fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(), RequestError> {
    let Some(tokens) = &state.config.auth else {
        return Ok(());
    };
    let header = headers.get(header::AUTHORIZATION);
    match (header, query_token) {
        (None, Some(token)) => tokens.check_token(token),
        (header, _) => tokens.check_header(header.map(HeaderValue::as_bytes)),
    }
    .inspect_err(|error| tracing::info!(message = "HTTP call refused.", %error))
}

/// Prometheus metrics; needs the token when the server has tokens (scrapers send one as a
/// bearer token).
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(error) = authorize(&state, &headers, None) {
        state.count_refusal(&error);
        return error_response(&error, None);
    }
    let metrics = &state.metrics;
    if let Some(ready) = state.ready.get() {
        let stats = ready.pool.stats();
        metrics.queue_depth.set(stats.queued_jobs as i64);
        metrics.pool_streams.set(stats.active_streams as i64);
        metrics.worker_busy_ratio.set(stats.load.busy);
        metrics
            .recent_queue_wait_p95
            .set(stats.load.queue_wait_p95.as_secs_f64());
        metrics
            .recent_partial_round_trip_p95
            .set(stats.load.partial_round_trip_p95.as_secs_f64());
    }
    for hub in state.captions.hubs() {
        let labels = crate::metrics::SourceLabels {
            source: hub.name().to_owned(),
        };
        let subscribers = hub.stats().subscribers;
        metrics
            .subscribers
            .get_or_create(&labels)
            .set(subscribers as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

async fn models(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(error) = authorize(&state, &headers, None) {
        state.count_refusal(&error);
        return error_response(&error, None);
    }
    let data: Vec<Value> = state
        .names
        .iter()
        .map(|name| json!({"id": name, "object": "model", "created": 0, "owned_by": "transcribe"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

async fn transcriptions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Multipart,
) -> Response {
    audio(&state, &headers, form, Task::Transcribe).await
}

async fn translations(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    form: Multipart,
) -> Response {
    audio(&state, &headers, form, Task::Translate).await
}

/// What `response_format` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

/// A transcription or translation request's fields.
#[derive(Debug, Default)]
struct Form {
    file: Option<(String, Vec<u8>)>,
    model: String,
    language: String,
    prompt: String,
    response_format: String,
    temperature: Option<String>,
    granularities: Vec<String>,
    stream: bool,
}

/// A field the request got wrong, named as OpenAI names it.
fn bad(param: &str, description: impl Into<String>) -> (RequestError, Option<String>) {
    (
        RequestError::invalid(param, description),
        Some(param.to_owned()),
    )
}

/// Reads the multipart fields; the body may hold at most `limit` bytes.
async fn read_form(
    mut form: Multipart,
    limit: usize,
) -> Result<Form, (RequestError, Option<String>)> {
    let mut out = Form::default();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err((too_large(limit), Some("file".to_owned())));
            }
            Err(e) => return Err(bad("file", format!("malformed multipart body: {e}"))),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let file_name = field.file_name().unwrap_or("upload").to_owned();
            let bytes = field.bytes().await.map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    (too_large(limit), Some("file".to_owned()))
                } else {
                    bad("file", format!("reading the upload: {e}"))
                }
            })?;
            out.file = Some((file_name, bytes.to_vec()));
            continue;
        }
        let value = field
            .text()
            .await
            .map_err(|e| bad(&name, format!("reading the field: {e}")))?;
        match name.as_str() {
            "model" => out.model = value,
            "language" => out.language = value,
            "prompt" => out.prompt = value,
            "response_format" => out.response_format = value,
            "temperature" => out.temperature = Some(value),
            "timestamp_granularities[]" | "timestamp_granularities" => {
                out.granularities.push(value);
            }
            "stream" => out.stream = matches!(value.trim(), "true" | "True" | "1"),
            // Other OpenAI fields (`include[]`, `chunking_strategy`) are not used here.
            _ => {}
        }
    }
    Ok(out)
}

/// The upload was over `--max-message-bytes`.
fn too_large(limit: usize) -> RequestError {
    RequestError::MessageTooLarge { limit }
}

async fn audio(state: &AppState, headers: &HeaderMap, form: Multipart, task: Task) -> Response {
    let request_id = state.request_id();
    let span = tracing::info_span!("rest", request_id = %request_id, ?task);
    let mut call = state.metrics.call("rest", "unary");
    let result = tracing::Instrument::instrument(
        state
            .calls
            .track_future(run_audio(state, headers, form, task)),
        span.clone(),
    )
    .await;
    state.call_ended(&mut call, result.as_ref().map(|_| ()).map_err(|(e, _)| e));
    match result {
        Ok(response) => response,
        Err((error, param)) => {
            span.in_scope(|| error.log());
            error_response(&error, param)
        }
    }
}

async fn run_audio(
    state: &AppState,
    headers: &HeaderMap,
    form: Multipart,
    task: Task,
) -> Result<Response, (RequestError, Option<String>)> {
    authorize(state, headers, None).map_err(|e| (e, None))?;
    let ready = state.ready().map_err(|e| (e, None))?;
    let form = read_form(form, state.config.max_message_bytes).await?;
    let format = match form.response_format.trim() {
        "" | "json" => Format::Json,
        "text" => Format::Text,
        "srt" => Format::Srt,
        "vtt" => Format::Vtt,
        "verbose_json" => Format::VerboseJson,
        other => {
            return Err(bad(
                "response_format",
                format!("{other:?} is not one of json, text, srt, vtt, verbose_json"),
            ));
        }
    };
    if let Some(t) = &form.temperature {
        match t.trim().parse::<f32>() {
            Ok(t) if (0.0..=1.0).contains(&t) => {}
            _ => {
                return Err(bad(
                    "temperature",
                    format!("{t:?} is not a number in [0, 1]"),
                ));
            }
        }
    }
    let mut words = false;
    for g in &form.granularities {
        match g.as_str() {
            "word" => words = true,
            "segment" => {}
            other => {
                return Err(bad(
                    "timestamp_granularities[]",
                    format!("{other:?} is not word or segment"),
                ));
            }
        }
    }
    let Some((file_name, bytes)) = form.file else {
        return Err(bad("file", "a file is required"));
    };
    let model = if OPENAI_MODEL_NAMES.contains(&form.model.trim()) {
        String::new()
    } else {
        form.model.trim().to_owned()
    };
    let config = RecognitionConfig {
        model,
        language_codes: Some(form.language.trim().to_owned())
            .filter(|l| !l.is_empty())
            .into_iter()
            .collect(),
        prompt: form.prompt,
        task: task as i32,
        enable_word_time_offsets: words,
        ..RecognitionConfig::default()
    };
    let recognition = parse_recognition(&config, "request", &ready.models).map_err(|e| {
        let param = match &e {
            RequestError::InvalidArgument { field, .. } if field.ends_with("language_codes") => {
                Some("language".to_owned())
            }
            RequestError::InvalidArgument { field, .. } if field.ends_with("task") => {
                Some("model".to_owned())
            }
            RequestError::InvalidArgument { field, .. } => {
                field.rsplit('.').next().map(str::to_owned)
            }
            _ => None,
        };
        (e, param)
    })?;
    let decoded = transcribe_audio::decode_bytes(&bytes, &file_name)
        .map_err(|e| bad("file", format!("cannot decode the upload: {e}")))?;
    let recognized = unary::recognize(state, &recognition, decoded.samples, "request", "rest")
        .await
        .map_err(|e| (e, None))?;
    Ok(respond(&recognized, format, form.stream, task, words))
}

/// The response in the requested format (or as Server-Sent Events with `stream`).
fn respond(
    recognized: &Recognized,
    format: Format,
    stream: bool,
    task: Task,
    words: bool,
) -> Response {
    // The text is the segments' texts joined with single spaces: the stream's deltas add
    // up to it exactly.
    let deltas: Vec<String> = recognized
        .segments
        .iter()
        .map(|s| s.text.trim())
        .filter(|t| !t.is_empty())
        .enumerate()
        .map(|(i, t)| {
            if i == 0 {
                t.to_owned()
            } else {
                format!(" {t}")
            }
        })
        .collect();
    let text: String = deltas.concat();
    if stream {
        let mut body = String::new();
        for delta in &deltas {
            let event = json!({"type": "transcript.text.delta", "delta": delta});
            body.push_str(&format!("data: {event}\n\n"));
        }
        let done = json!({"type": "transcript.text.done", "text": text});
        body.push_str(&format!("data: {done}\n\n"));
        return (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response();
    }
    let plain = |body: String| ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body);
    match format {
        Format::Json => axum::Json(json!({"text": text})).into_response(),
        Format::Text => plain(format!("{text}\n")).into_response(),
        Format::Srt => plain(subtitles::srt(&recognized.segments)).into_response(),
        Format::Vtt => plain(subtitles::vtt(&recognized.segments)).into_response(),
        Format::VerboseJson => {
            axum::Json(verbose_json(recognized, &text, task, words)).into_response()
        }
    }
}

/// OpenAI's `verbose_json`: task, language (its English name), duration, text, segments,
/// and words at the top level when word timestamps were asked for.
fn verbose_json(recognized: &Recognized, text: &str, task: Task, words: bool) -> Value {
    let language = recognized
        .language
        .as_deref()
        .and_then(|code| {
            transcribe_core::language::LANGUAGES
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, name)| (*name).to_owned())
        })
        .unwrap_or_default();
    let segments: Vec<Value> = recognized
        .segments
        .iter()
        .enumerate()
        .map(|(id, s)| segment_json(id, s))
        .collect();
    let mut body = json!({
        "task": if task == Task::Translate { "translate" } else { "transcribe" },
        "language": language,
        "duration": recognized.audio_seconds,
        "text": text,
        "segments": segments,
    });
    if words {
        let words: Vec<Value> = recognized
            .segments
            .iter()
            .flat_map(|s| s.words.iter())
            .map(|w| json!({"word": w.text.trim(), "start": w.start, "end": w.end}))
            .collect();
        body["words"] = Value::Array(words);
    }
    body
}

fn segment_json(id: usize, s: &Segment) -> Value {
    json!({
        "id": id,
        "seek": 0,
        "start": s.start,
        "end": s.end,
        "text": s.text.trim(),
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": s.avg_logprob,
        "compression_ratio": 0.0,
        "no_speech_prob": s.no_speech_prob,
    })
}
