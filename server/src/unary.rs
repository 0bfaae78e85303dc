//! Whole-audio recognition: one upload decoded as one job on the pool. The doors that take
//! an upload (gRPC Recognize, the REST transcriptions and translations) validate their
//! request into a [`Recognition`] and decoded samples, then call [`recognize`]; each turns
//! the [`Recognized`] segments into its own response.

use std::time::Duration;

use transcribe_core::policy::{DEFAULT_LOGPROB_THRESHOLD, DEFAULT_NO_SPEECH_THRESHOLD};
use transcribe_core::{DecodeOptions, SAMPLE_RATE, Segment, Transcript};

use crate::error::RequestError;
use crate::pool::{Job, Priority};
use crate::recognition::Recognition;
use crate::state::AppState;

/// What one upload gave.
#[derive(Debug, Clone)]
pub(crate) struct Recognized {
    /// The segments with speech (Whisper's no-speech test), in order; times from the start.
    pub segments: Vec<Segment>,
    /// Detected or requested language code.
    pub language: Option<String>,
    /// Length of the audio.
    pub audio_seconds: f64,
}

/// Decodes `samples` (16 kHz mono) with `recognition`'s settings, within the server's
/// `--max-unary-audio`, after admission. `config_field` is the request's recognition config
/// path, for decode failures blamed on the options; `door` names the caller in metrics. Dropping the future (the client went
/// away) drops the lease, which cancels the decode.
///
/// # Errors
/// [`RequestError::UnaryAudioTooLong`], admission refusals, and decode failures
/// ([`RequestError::decode_failed`]).
pub(crate) async fn recognize(
    state: &AppState,
    recognition: &Recognition,
    samples: Vec<f32>,
    config_field: &str,
    door: &'static str,
) -> Result<Recognized, RequestError> {
    let ready = state.ready()?;
    let audio_seconds = samples.len() as f64 / f64::from(SAMPLE_RATE);
    state.metrics.audio(door, "unary", audio_seconds);
    let limit = state.config.max_unary_audio;
    if audio_seconds > limit.as_secs_f64() {
        return Err(RequestError::UnaryAudioTooLong {
            limit,
            got: Duration::from_secs_f64(audio_seconds),
        });
    }
    let lease = state.admit(ready)?;
    let options = DecodeOptions {
        language: recognition.language.clone(),
        translate: recognition.translate,
        prompt: recognition.prompt.clone(),
        audio_ctx: None,
        word_timestamps: recognition.words.any(),
        temperature_fallback: state.config.temperature_fallback,
        max_tokens: state.config.max_tokens,
        single_segment: false,
        no_timestamps: state.config.no_timestamps,
        prefix: None,
        stop_restated: false,
    };
    let submitted = lease.submit(Job {
        model: recognition.model,
        samples,
        options,
        priority: Priority::Final,
        tag: 0,
    });
    // A drain lets the decode finish; only the pool's shutdown at the drain's deadline
    // drops it (the channel closes).
    let output = submitted.output.await.map_err(|_| RequestError::Draining)?;
    drop(lease);
    let transcript = output
        .result
        .map_err(|e| RequestError::from_engine(&e, config_field))?;
    let threshold = recognition
        .no_speech_threshold
        .unwrap_or(DEFAULT_NO_SPEECH_THRESHOLD);
    state
        .metrics
        .decoded("file", output.queued, output.inference, audio_seconds);
    tracing::info!(
        message = "Recognized.",
        audio_seconds,
        queued_seconds = output.queued.as_secs_f64(),
        inference_seconds = output.inference.as_secs_f64(),
    );
    Ok(Recognized {
        segments: keep_speech(&transcript, threshold).cloned().collect(),
        language: transcript.language,
        audio_seconds,
    })
}

/// Segments that are not silence by Whisper's own test (openai/whisper `transcribe.py`: a
/// segment is skipped when `no_speech_prob > no_speech_threshold` and
/// `avg_logprob < logprob_threshold`) and have text.
fn keep_speech(
    transcript: &Transcript,
    no_speech_threshold: f32,
) -> impl Iterator<Item = &transcribe_core::Segment> {
    transcript.segments.iter().filter(move |s| {
        let silent =
            s.no_speech_prob > no_speech_threshold && s.avg_logprob < DEFAULT_LOGPROB_THRESHOLD;
        !silent && !s.text.trim().is_empty()
    })
}
