//! Pure building blocks shared by every part of `transcribe`.
//!
//! Nothing here does I/O, spawns threads or reads the wall clock: every function takes
//! samples or text and returns values, so all of it is unit-tested in milliseconds.
//!
//! # Layout
//! - [`audio`]: the pipeline's audio constants (16 kHz mono f32) and sample/time conversions.
//! - [`transcript`]: [`Transcript`], [`Segment`], [`Word`]: what an engine returns.
//! - [`engine`]: the [`Transcriber`] trait every engine implements (whisper, and a scripted
//!   fake in tests), with its [`DecodeOptions`] and [`EngineError`]; its cancellable form
//!   [`Decoder`] with a [`CancelHandle`], made per worker by a [`DecoderFactory`].
//! - [`language`]: the languages Whisper knows (codes and names).
//! - [`latency`]: when each word first showed (an alignment of what was shown with
//!   reference words), for client traces and streaming benchmarks.
//! - [`subtitles`]: plain text, SubRip and WebVTT renderings of segments.
//! - [`text`]: transcript normalisation and word error rate, used by tests and benchmarks.
//! - [`vad`]: [`Vad`], an energy + spectral voice activity detector with an adaptive noise
//!   floor and hangover: utterance start/end events in absolute sample positions.
//! - [`chunk`]: [`chunk::plan_chunks`], cutting a long recording at pauses into chunks of
//!   at most one Whisper window, for independent (parallel) decoding of files.
//! - [`policy`]: [`StreamingPolicy`], the sans-IO streaming state machine (utterances,
//!   partial and final [`DecodeJob`]s, LocalAgreement-2 commits, step widening, guards
//!   against hallucinations and loops) emitting [`PolicyEvent`]s.
//! - [`stream`] (in [`policy`]): a synchronous driver running a policy over a buffer with any
//!   [`Transcriber`] (tests, offline streaming benchmarks).
//! - [`fake`]: [`fake::ScriptedTranscriber`], a scripted engine (timed words, unstable
//!   tails, scripted faults) for testing the policy and the transport without a model.
//!
//! # Example
//! ```
//! use transcribe_core::text::wer;
//! let w = wer("Ask not what your country can do", "ask not what your country can do!");
//! assert_eq!(w.errors, 0);
//! ```
#![warn(missing_docs)]

pub mod audio;
pub mod chunk;
pub mod engine;
pub mod fake;
pub mod language;
pub mod latency;
pub mod policy;
pub mod subtitles;
pub mod text;
pub mod transcript;
pub mod vad;

pub use audio::SAMPLE_RATE;
pub use engine::{
    CancelHandle, DecodeOptions, Decoder, DecoderFactory, EngineError, Transcriber, Uninterruptible,
};
pub use policy::{DecodeJob, JobKind, PolicyConfig, PolicyEvent, StreamingPolicy, stream};
pub use transcript::{Segment, Transcript, Word};
pub use vad::{ConfigError, Vad, VadConfig, VadEvent};
