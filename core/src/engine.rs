//! The engine traits: [`Transcriber`] (one decoding context; for whisper, one
//! `WhisperState`) and its cancellable form [`Decoder`], made per worker by a
//! [`DecoderFactory`].
//!
//! The whisper implementations live in `transcribe-engine`; tests of the streaming policy
//! and of the transport use a scripted fake behind the same traits ([`Uninterruptible`]
//! adapts any `Transcriber`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::transcript::Transcript;

/// How to decode one buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeOptions {
    /// Spoken language (ISO 639-1 code); `None` detects it.
    pub language: Option<String>,
    /// Translate to English instead of transcribing.
    pub translate: bool,
    /// Text that preceded this audio (Whisper's prompt), if any.
    pub prompt: Option<String>,
    /// Encoder context in frames (`audio_ctx`); `None` uses the model's full 30 s window.
    pub audio_ctx: Option<u32>,
    /// Compute word timings and probabilities.
    pub word_timestamps: bool,
    /// Allow Whisper's temperature fallback when a decode looks degenerate.
    pub temperature_fallback: bool,
    /// Upper bound on text tokens per segment (`None`: the model's limit).
    pub max_tokens: Option<u32>,
    /// Treat the whole buffer as one segment (streaming does; files do not).
    pub single_segment: bool,
    /// No timestamp tokens (whisper's `no_timestamps`): with a random-weight model, a
    /// random timestamp past the audio's end no longer stops the decode, so `max_tokens`
    /// becomes its length (fixed work, for capacity measurements).
    pub no_timestamps: bool,
    /// Text the transcript must start with (openai/whisper's `prefix`): fed to the decoder
    /// in one batched call, so that only the text after it is generated token by token. A
    /// streaming partial passes the words it already committed. Greedy decoding's first
    /// attempt only (a temperature fallback attempt decodes without it); ignored when longer
    /// than half the model's text context.
    pub prefix: Option<String>,
    /// End the decode as soon as its text restates itself
    /// ([`crate::policy::restates_itself`] over its text tokens): a streaming
    /// partial's fitted context makes Whisper restate the utterance until its token limit,
    /// and the policy keeps only the first telling anyway.
    pub stop_restated: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            language: None,
            translate: false,
            prompt: None,
            audio_ctx: None,
            word_timestamps: true,
            temperature_fallback: true,
            max_tokens: None,
            single_segment: false,
            no_timestamps: false,
            prefix: None,
            stop_restated: false,
        }
    }
}

/// Why a decode failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The decode was cancelled (client gone, deadline, shutdown). Nothing to retry.
    #[error("decode cancelled")]
    Cancelled,
    /// The options are invalid for this model (e.g. a language it does not know).
    /// Fix the request.
    #[error("invalid decode options: {0}")]
    InvalidOptions(String),
    /// The engine failed internally. The stream should end; the engine stays usable.
    #[error("inference failed: {0}")]
    Inference(String),
}

/// A decoding context: transcribes 16 kHz mono `f32` buffers.
///
/// Implementations are `Send` so that worker threads can own them; one instance decodes one
/// buffer at a time.
pub trait Transcriber: Send {
    /// Transcribes `samples` (16 kHz mono, `[-1, 1]`). Times in the result are seconds from
    /// the start of `samples`.
    ///
    /// # Errors
    /// [`EngineError::Cancelled`] when cancelled, [`EngineError::InvalidOptions`] for options
    /// the model cannot honour, [`EngineError::Inference`] otherwise.
    fn transcribe(
        &mut self,
        samples: &[f32],
        options: &DecodeOptions,
    ) -> Result<Transcript, EngineError>;
}

impl<T: Transcriber + ?Sized> Transcriber for Box<T> {
    fn transcribe(
        &mut self,
        samples: &[f32],
        options: &DecodeOptions,
    ) -> Result<Transcript, EngineError> {
        (**self).transcribe(samples, options)
    }
}

/// Cancels a decode that is running (or the next one started with it). Cloned handles share
/// one flag.
#[derive(Clone, Debug, Default)]
pub struct CancelHandle(Arc<AtomicBool>);

impl CancelHandle {
    /// Asks the decode to stop at its next check.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Clears a cancellation so the handle can be used for another decode.
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    /// The flag itself, for an engine's abort callback (it lives as long as any clone of
    /// this handle).
    pub fn flag(&self) -> &AtomicBool {
        &self.0
    }
}

/// A decoding context owned by one worker thread, with per-job cancellation.
pub trait Decoder: Send {
    /// Decodes `samples` (16 kHz mono). The decode should stop early with
    /// [`EngineError::Cancelled`] once `cancel` is set.
    ///
    /// # Errors
    /// As [`Transcriber::transcribe`].
    fn decode(
        &mut self,
        samples: &[f32],
        options: &DecodeOptions,
        cancel: &CancelHandle,
    ) -> Result<Transcript, EngineError>;
}

/// Adapts any [`Transcriber`] (e.g. a scripted fake) to [`Decoder`]: cancellation is checked
/// before and after the decode, not during it.
pub struct Uninterruptible<T>(pub T);

impl<T: Transcriber> Decoder for Uninterruptible<T> {
    fn decode(
        &mut self,
        samples: &[f32],
        options: &DecodeOptions,
        cancel: &CancelHandle,
    ) -> Result<Transcript, EngineError> {
        if cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        let result = self.0.transcribe(samples, options);
        if cancel.is_cancelled() {
            return Err(EngineError::Cancelled);
        }
        result
    }
}

/// Makes one [`Decoder`] per worker for one loaded model.
pub trait DecoderFactory: Send + Sync {
    /// A new decoder.
    ///
    /// # Errors
    /// Why it could not be created (out of memory for a decoding state, ...).
    fn create(&self) -> Result<Box<dyn Decoder>, String>;
}

impl<F> DecoderFactory for F
where
    F: Fn() -> Result<Box<dyn Decoder>, String> + Send + Sync,
{
    fn create(&self) -> Result<Box<dyn Decoder>, String> {
        self()
    }
}

/// The kind of a failed decode, mirroring [`EngineError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// [`EngineError::Cancelled`].
    Cancelled,
    /// [`EngineError::InvalidOptions`]: the request's options are wrong.
    InvalidOptions,
    /// [`EngineError::Inference`]: the engine failed.
    Inference,
}

impl From<&EngineError> for FailureKind {
    fn from(error: &EngineError) -> Self {
        match error {
            EngineError::Cancelled => Self::Cancelled,
            EngineError::InvalidOptions(_) => Self::InvalidOptions,
            EngineError::Inference(_) => Self::Inference,
        }
    }
}
