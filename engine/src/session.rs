//! One decoding context: a `WhisperState` plus cached parameters, implementing
//! [`Transcriber`].
//!
//! This module is the crate's FFI boundary for callbacks: whisper-rs's closure-based abort
//! callback does not see captured state (docs/DESIGN.md "whisper-rs facts"), so a plain `extern "C"` function reads an
//! `AtomicBool` through the user-data pointer.
#![allow(unsafe_code)]

use std::borrow::Cow;
use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use transcribe_core::policy::restates_itself;
use transcribe_core::{
    CancelHandle, DecodeOptions, Decoder, EngineError, Segment, Transcriber, Transcript,
};
use whisper_rs::{FullParams, SamplingStrategy, WhisperState};

use crate::words::{TokenPiece, assemble};
use crate::{LoadError, WhisperModel};

/// Whisper's timestamps are in units of 10 ms (whisper.cpp `whisper_full_get_segment_t0`).
const TIMESTAMP_UNIT_SECONDS: f64 = 0.01;

/// Most prompt tokens passed to the decoder: half of the 448-token text context, as
/// openai/whisper does (`decoding.py`: `n_ctx // 2 - 1`).
const MAX_PROMPT_TOKENS: usize = 223;

/// Fewest samples handed to whisper.cpp (100 ms at 16 kHz): shorter input is padded with
/// silence to this length, in this one place for every decode (files, Recognize, streaming
/// partials and finals). whisper.cpp's log-mel spectrogram reads samples 1..=200 for its
/// reflective padding whatever the input's length (a heap read past the end below 201
/// samples, upstream #3956), and a 1-sample input fails with error -3. Times in the result
/// are clamped to the real input.
pub const MIN_DECODE_SAMPLES: usize = 1_600;

/// Temperature step of Whisper's fallback (openai/whisper `transcribe.py` defaults to
/// 0.0, 0.2, ..., 1.0).
const TEMPERATURE_INCREMENT: f32 = 0.2;

/// whisper.cpp's abort callback: returns true when the flag behind `user_data` is set.
extern "C" fn abort_requested(user_data: *mut c_void) -> bool {
    if user_data.is_null() {
        return false;
    }
    // SAFETY: `user_data` is the address of the `AtomicBool` inside the session's
    // `CancelHandle` Arc, which the session keeps alive for the whole `full()` call.
    let flag = unsafe { &*(user_data as *const AtomicBool) };
    flag.load(Ordering::Relaxed)
}

/// What [`stop_restated`] needs of the model: its end-of-text token (text tokens are below
/// it) and its vocabulary size (the logits' length).
struct RestatedStop {
    eot: i32,
    n_vocab: usize,
}

/// whisper.cpp's logits filter for `DecodeOptions::stop_restated`: once the text tokens so
/// far restate themselves ([`restates_itself`]), every token but end-of-text is suppressed,
/// so the decode ends there.
unsafe extern "C" fn stop_restated(
    _ctx: *mut whisper_rs_sys::whisper_context,
    _state: *mut whisper_rs_sys::whisper_state,
    tokens: *const whisper_rs_sys::whisper_token_data,
    n_tokens: std::ffi::c_int,
    logits: *mut f32,
    user_data: *mut c_void,
) {
    if user_data.is_null() || logits.is_null() || tokens.is_null() || n_tokens <= 0 {
        return;
    }
    // SAFETY: `user_data` is the address of a `RestatedStop` that `transcribe` keeps alive
    // for the whole `full()` call; whisper.cpp passes the decoder's tokens so far and the
    // logits row it is about to sample from, `n_vocab` long.
    let (stop, tokens, logits) = unsafe {
        let stop = &*(user_data as *const RestatedStop);
        (
            stop,
            std::slice::from_raw_parts(tokens, n_tokens as usize),
            std::slice::from_raw_parts_mut(logits, stop.n_vocab),
        )
    };
    let text: Vec<i32> = tokens
        .iter()
        .map(|t| t.id)
        .filter(|&id| id < stop.eot)
        .collect();
    if restates_itself(&text) {
        for (id, logit) in logits.iter_mut().enumerate() {
            if id as i32 != stop.eot {
                *logit = f32::NEG_INFINITY;
            }
        }
    }
}

/// A decoding context with its own `WhisperState`. Not shared: one decode at a time.
pub struct WhisperSession {
    model: WhisperModel,
    state: WhisperState,
    cancel: CancelHandle,
    /// Parameters per (language, translate). whisper-rs leaks a C string each time a language
    /// is set, so each combination is built once and cloned per decode (bounded by the number
    /// of languages).
    params: Vec<(Option<String>, bool, FullParams<'static, 'static>)>,
    progress: Option<ProgressFn>,
    /// Threads per decode for this session (None: the model's configuration).
    threads: Option<usize>,
}

/// A progress callback: receives whisper.cpp's percentage (0-100) during a decode.
pub type ProgressFn = Arc<dyn Fn(i32) + Send + Sync>;

impl WhisperSession {
    pub(crate) fn new(model: WhisperModel) -> Result<Self, LoadError> {
        let state = model
            .context()
            .create_state()
            .map_err(|e| LoadError::State {
                path: model.path().to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            model,
            state,
            cancel: CancelHandle::default(),
            params: Vec::new(),
            progress: None,
            threads: None,
        })
    }

    /// The handle that cancels this session's decodes.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// Uses `handle` for cancellation from now on (a worker pool passes each job's own).
    pub fn set_cancel_handle(&mut self, handle: CancelHandle) {
        self.cancel = handle;
    }

    /// Reports decode progress of long buffers to `progress` (None: no reports).
    pub fn set_progress(&mut self, progress: Option<ProgressFn>) {
        self.progress = progress;
    }

    /// Uses `threads` per decode instead of the model's configured count (None: back to it).
    /// Several sessions decoding at once share the cores this way.
    pub fn set_threads(&mut self, threads: Option<usize>) {
        self.threads = threads;
    }

    /// The model this session decodes with.
    pub fn model(&self) -> &WhisperModel {
        &self.model
    }

    fn base_params(
        &mut self,
        language: Option<&str>,
        translate: bool,
    ) -> FullParams<'static, 'static> {
        if let Some((_, _, p)) = self
            .params
            .iter()
            .find(|(l, t, _)| l.as_deref() == language && *t == translate)
        {
            return p.clone();
        }
        let mut p = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        // Suppress non-speech tokens ("[BLANK_AUDIO]", "(beeping)"), as openai/whisper does
        // by default (`suppress_tokens="-1"`): measured here, it also stopped tiny.en from
        // opening audio-fixtures/speech/dog.wav with a hallucinated "You know,".
        p.set_suppress_nst(true);
        // `get_lang_str` gives a 'static name for a known language; unknown ones were
        // rejected by the caller.
        let lang: Option<&'static str> = language
            .and_then(whisper_rs::get_lang_id)
            .and_then(whisper_rs::get_lang_str);
        p.set_language(Some(lang.unwrap_or("auto")));
        p.set_translate(translate);
        p.set_print_progress(false);
        p.set_print_realtime(false);
        p.set_print_special(false);
        p.set_print_timestamps(false);
        p.set_suppress_blank(true);
        p.set_no_context(true);
        self.params
            .push((language.map(str::to_owned), translate, p.clone()));
        p
    }

    fn validate(&self, options: &DecodeOptions) -> Result<(), EngineError> {
        if let Some(lang) = options.language.as_deref() {
            if whisper_rs::get_lang_id(lang).is_none() {
                return Err(EngineError::InvalidOptions(format!(
                    "unknown language {lang:?}"
                )));
            }
            if !self.model.is_multilingual() && lang != "en" && lang != "english" {
                return Err(EngineError::InvalidOptions(format!(
                    "this model is English-only; it cannot transcribe language {lang:?}"
                )));
            }
        }
        if options.translate && !self.model.is_multilingual() {
            return Err(EngineError::InvalidOptions(
                "this model is English-only; translation needs a multilingual model".into(),
            ));
        }
        Ok(())
    }
}

impl Transcriber for WhisperSession {
    fn transcribe(
        &mut self,
        samples: &[f32],
        options: &DecodeOptions,
    ) -> Result<Transcript, EngineError> {
        self.validate(options)?;
        if self.cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        if samples.is_empty() {
            return Ok(Transcript {
                segments: vec![],
                language: options.language.clone(),
            });
        }
        let duration = samples.len() as f64 / f64::from(transcribe_core::SAMPLE_RATE);
        let samples = at_least_min_decode(samples);
        let samples: &[f32] = &samples;
        let model = self.model.clone();
        let ctx = model.context();
        let prompt_tokens = match options.prompt.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => {
                let mut t = ctx
                    .tokenize(p, 4 * MAX_PROMPT_TOKENS)
                    .map_err(|e| EngineError::Inference(format!("tokenizing the prompt: {e}")))?;
                if t.len() > MAX_PROMPT_TOKENS {
                    t.drain(..t.len() - MAX_PROMPT_TOKENS);
                }
                t
            }
            _ => Vec::new(),
        };
        // The prefix continues the task tokens as the model's own text would: a word starts
        // with a space.
        let prefix_tokens = match options.prefix.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => model.tokenize(&format!(" {p}"), 4 * MAX_PROMPT_TOKENS)?,
            _ => Vec::new(),
        };
        let threads = self.threads.unwrap_or(model.config().threads).max(1);
        let mut params = self.base_params(options.language.as_deref(), options.translate);
        params.set_n_threads(threads as i32);
        params.set_single_segment(options.single_segment);
        params.set_no_timestamps(options.no_timestamps);
        params.set_token_timestamps(options.word_timestamps);
        params.set_audio_ctx(options.audio_ctx.map_or(0, |c| c as i32));
        params.set_max_tokens(options.max_tokens.map_or(0, |m| m as i32));
        params.set_temperature_inc(if options.temperature_fallback {
            TEMPERATURE_INCREMENT
        } else {
            0.0
        });
        params.set_tokens(&prompt_tokens);
        if let Some(progress) = self.progress.clone() {
            params.set_progress_callback_safe(move |p: i32| progress(p));
        }
        let restated = options.stop_restated.then(|| RestatedStop {
            eot: ctx.token_eot(),
            n_vocab: ctx.n_vocab() as usize,
        });
        if let Some(restated) = &restated {
            // SAFETY: `stop_restated` only reads `restated` and writes the logits row it is
            // given; `restated` outlives the `full()` call below.
            unsafe {
                params.set_filter_logits_callback(Some(stop_restated));
                params.set_filter_logits_callback_user_data(
                    restated as *const RestatedStop as *mut c_void,
                );
            }
        }
        let flag: *const AtomicBool = self.cancel.flag();
        // SAFETY: `abort_requested` only reads an `AtomicBool` through the pointer, and the
        // handle it belongs to (`self.cancel`) outlives the `full()` call below.
        unsafe {
            params.set_abort_callback(Some(abort_requested));
            params.set_abort_callback_user_data(flag as *mut c_void);
        }
        // SAFETY: whisper.cpp copies the tokens (a thread-local vector, consumed by the next
        // whisper_full call on this thread, which is the one below); the slice outlives the call.
        unsafe {
            whisper_rs_sys::whisper_set_next_prefix(
                prefix_tokens.as_ptr(),
                prefix_tokens.len() as std::ffi::c_int,
            );
        }
        let result = self.state.full(params, samples);
        // SAFETY: clears this thread's prefix, in case whisper-rs returned before whisper.cpp
        // consumed it.
        unsafe { whisper_rs_sys::whisper_set_next_prefix(std::ptr::null(), 0) };
        if self.cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        result.map_err(|e| EngineError::Inference(e.to_string()))?;
        let eot = ctx.token_eot();
        let mut segments = Vec::new();
        // Times never point past the real input (padding included, or whisper's rounding).
        let clamp = |t: f64| t.clamp(0.0, duration);
        for seg in self.state.as_iter() {
            let start = clamp(seg.start_timestamp() as f64 * TIMESTAMP_UNIT_SECONDS);
            let end = clamp(seg.end_timestamp() as f64 * TIMESTAMP_UNIT_SECONDS);
            let text = seg
                .to_str_lossy()
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            let mut pieces = Vec::new();
            let mut logprob_sum = 0.0f32;
            for i in 0..seg.n_tokens() {
                let Some(token) = seg.get_token(i) else {
                    continue;
                };
                if token.token_id() >= eot {
                    continue; // special and timestamp tokens
                }
                let data = token.token_data();
                logprob_sum += data.plog;
                pieces.push(TokenPiece {
                    bytes: token.to_bytes().map(<[u8]>::to_vec).unwrap_or_default(),
                    start: clamp(data.t0 as f64 * TIMESTAMP_UNIT_SECONDS),
                    end: clamp(data.t1 as f64 * TIMESTAMP_UNIT_SECONDS),
                    probability: data.p,
                });
            }
            let avg_logprob = if pieces.is_empty() {
                0.0
            } else {
                logprob_sum / pieces.len() as f32
            };
            let words = if options.word_timestamps {
                assemble(&pieces, start, end)
            } else {
                Vec::new()
            };
            segments.push(Segment {
                start,
                end,
                text,
                words,
                no_speech_prob: seg.no_speech_probability(),
                avg_logprob,
            });
        }
        // Only a detection run has a meaningful language id: an English-only model detects
        // nothing (whisper.cpp leaves a stale id, seen as "ur", "th", "sq"), and a requested
        // language is what was decoded.
        let language = if !model.is_multilingual() {
            Some("en".to_owned())
        } else if let Some(requested) = options.language.clone() {
            Some(requested)
        } else {
            whisper_rs::get_lang_str(self.state.full_lang_id_from_state()).map(str::to_owned)
        };
        Ok(Transcript { segments, language })
    }
}

/// `samples`, padded with silence when shorter than [`MIN_DECODE_SAMPLES`].
pub(crate) fn at_least_min_decode(samples: &[f32]) -> Cow<'_, [f32]> {
    if samples.len() < MIN_DECODE_SAMPLES {
        Cow::Owned(padded_with_silence(samples))
    } else {
        Cow::Borrowed(samples)
    }
}

/// `samples` followed by silence up to [`MIN_DECODE_SAMPLES`].
fn padded_with_silence(samples: &[f32]) -> Vec<f32> {
    let mut padded = Vec::with_capacity(MIN_DECODE_SAMPLES.max(samples.len()));
    padded.extend_from_slice(samples);
    padded.resize(MIN_DECODE_SAMPLES.max(samples.len()), 0.0);
    padded
}

impl Decoder for WhisperSession {
    fn decode(
        &mut self,
        samples: &[f32],
        options: &DecodeOptions,
        cancel: &CancelHandle,
    ) -> Result<Transcript, EngineError> {
        // The abort callback reads this job's handle (a raw callback: see the module doc).
        self.set_cancel_handle(cancel.clone());
        self.transcribe(samples, options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_padded_with_silence() {
        for n in [1, 100, 200, 400, MIN_DECODE_SAMPLES - 1] {
            let padded = padded_with_silence(&vec![0.5; n]);
            assert_eq!(padded.len(), MIN_DECODE_SAMPLES);
            assert!(padded[..n].iter().all(|s| *s == 0.5));
            assert!(padded[n..].iter().all(|s| *s == 0.0));
        }
    }
}
