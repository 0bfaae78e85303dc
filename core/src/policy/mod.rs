//! The streaming policy: when to decode, what to commit, when an utterance is final.
//!
//! [`StreamingPolicy`] is a sans-IO state machine over 16 kHz samples. It owns the
//! [`Vad`] and the open utterance's audio; it never calls an engine itself. Instead it hands
//! out [`DecodeJob`]s and takes their results back, so the same code runs under a tokio
//! task with a worker pool, in a synchronous test loop ([`stream::run_stream`]) or
//! in an offline benchmark. Time is the sample clock (samples pushed so far): no wall
//! clock, no threads, fully deterministic.
//!
//! # How a stream drives it
//! ```text
//! let mut policy = StreamingPolicy::new(config)?;
//! on audio chunk:      forward(policy.push_audio(&chunk));  try_dispatch()
//! on FinalizeUtterance: forward(policy.finalize());          try_dispatch()
//! on a job's result:   forward(policy.on_result(job_id, result)); try_dispatch()
//! on end of audio:     forward(policy.end_of_stream());      try_dispatch()
//!                      ...keep feeding results until policy.is_done()
//! try_dispatch():      if let Some(job) = policy.poll_job() { send job to a worker }
//! ```
//! Every method that changes state returns the [`PolicyEvent`]s it caused, in order;
//! forward them in that order. At most one job is in flight: [`StreamingPolicy::poll_job`]
//! returns `None` until the previous job's result came back through
//! [`StreamingPolicy::on_result`]. A job whose result will never come (a cancelled job)
//! must still be answered, with `Err(EngineError::Cancelled)`.
//!
//! # What it does (docs/DESIGN.md, "Streaming policy")
//! - **Utterances**: the VAD's speech start opens one (with its pre-roll), its end closes
//!   it. Audio outside utterances is dropped but still advances the clock, so every time is
//!   absolute (samples since the first pushed sample).
//! - **Partials**: every `step` of new audio in the open utterance (once it holds
//!   `min_partial_samples`), the whole utterance is decoded again ([`JobKind::Partial`]:
//!   one segment, no temperature fallback).
//! - **LocalAgreement-2** (Machacek et al. 2023, ufal/whisper_streaming): the longest
//!   common word prefix of the last two hypotheses beyond the committed words is committed
//!   (words compared normalised; the newer hypothesis's spelling and times are kept). A
//!   hypothesis that revised earlier words is aligned to the committed ones by text
//!   ([`tail_after`]).
//!   Committed words are never retracted, so a partial covering less than
//!   `min_commit_samples` of the utterance (3 s on GPUs, [`GPU_MIN_COMMIT_SAMPLES`]; 0 on
//!   the CPU) commits nothing: its words show as the tail, and later partials may correct
//!   them. [`PolicyEvent::Interim`] carries the committed
//!   text (stability [`STABILITY_COMMITTED`]) and the unconfirmed tail (stability
//!   [`STABILITY_TAIL`]).
//! - **Finals**: on VAD end of speech, [`StreamingPolicy::finalize`],
//!   [`StreamingPolicy::end_of_stream`] or the maximum length, the utterance is decoded once
//!   more ([`JobKind::Final`], word timings, temperature fallback, the full `audio_ctx`
//!   unless [`FinalContext::Fit`]); its
//!   text is the final decode's words, which replace the committed ones (the committed
//!   words only when the final decode heard nothing). Interim stability is an estimate, as
//!   in Google Speech: a final may differ from the interims before it. Measured with tiny.en
//!   on the nine speech fixtures paced in real time (317 words, offline WER 0.038):
//!   committed words plus the final's words after them gave 0.145 (full-window finals) and
//!   0.085 (scaled); the final decode's words alone 0.066 and 0.073 (one run each on two
//!   busy cores). Committed words from short partials were wrong and agreed twice ("you know
//!   all don't set" for "the old dog slept"), and partial and full-window word times
//!   disagree, so the words after the committed ones were misplaced. At the maximum length the
//!   utterance is cut after its last committed word, at the quietest 100 ms within 0.2 s
//!   of where the word times put the gap (they are rough, and a cut inside "stars" left the
//!   next final inventing a phrase for "tars"): the audio before the cut gets its final
//!   decode, and the rest is carried into the next utterance. (Until 2026-12-05 the cut's
//!   final was the committed words, no decode; on a GPU build's schedule tiny.en's partials
//!   agreed on restated sentences, which then stood in the final: long_60s at 75% streaming
//!   WER against 10%.)
//! - **Step widening**: the samples that arrive while a job is in flight measure its cost.
//!   When a decode costs more than the step, the step widens to 1.2 × the cost (at most
//!   `max_step_samples`), and shrinks back by at most 20% per job once decodes keep up.
//! - **audio_ctx** of partials = ceil(samples / 320) + margin, within [floor, 1500]
//!   (whisper.cpp `stream`'s trick; docs/DESIGN.md "whisper-rs facts"); finals decode with the
//!   full window ([`FINAL_AUDIO_CTX`]), which keeps streaming WER near offline WER, or, with
//!   [`FinalContext::Fit`], a context fitted with a wide margin (sooner, slightly less
//!   accurate).
//! - **Prompt**: the user's prompt and the last `prompt_max_chars` of previous finals.
//! - **Token limit of partials** (`limit_partial_tokens`, on by default): without an
//!   explicit `max_tokens`, a partial decodes at most [`partial_token_limit`] tokens (16 plus 8
//!   per second of audio), so that one that loops stops early; finals are not limited.
//! - **Restatements stop partials** (`stop_restated_partials`, on by default): a partial's
//!   decode ends once its text restates itself ([`restates_itself`]), as partials with
//!   a fitted context do; finals decode to the end.
//! - **Prefix** (`partial_prefix`, off by default): a partial's decode starts from the
//!   utterance's committed words (`DecodeOptions::prefix`), so the engine generates only the
//!   words after them; finals decode without it.
//! - **Guards**: segments Whisper marks as silence are dropped; a final made of nothing or
//!   only of known silence hallucinations ("Thank you.") when the VAD saw little speech is
//!   dropped; a final that loops (an n-gram repeated more than 3 times, or a compression
//!   ratio above 2.4) is decoded once more without a prompt, and its loops are cut if it
//!   still loops. Partial hypotheses get the same guards, with loops cut at once, and a
//!   restated tail (the decode starting the utterance over at its end, common with a
//!   fitted context) cut to its first telling ([`cut_restated_tail`]).
//!
//! # Utterance indices
//! An utterance's `utterance_index` is the number of finals emitted before it: indices
//! count 0, 1, 2, ... with exactly one [`PolicyEvent::Final`] each. An utterance that is
//! dropped (hallucination, empty, failed decode) does **not** use up its index: the next
//! utterance reuses it, replacing any interim text shown for it. When interims were sent
//! for a dropped utterance, an empty [`PolicyEvent::Interim`] with that index tells the
//! client to clear them.

mod guards;
pub mod stream;
mod words;

use std::collections::VecDeque;

use crate::audio::{WINDOW_SAMPLES, samples_to_seconds, seconds_to_samples};
pub use crate::engine::FailureKind;
use crate::engine::{DecodeOptions, EngineError};
use crate::transcript::{Transcript, Word};
use crate::vad::{self, ConfigError, FRAME_SAMPLES, Vad, VadConfig, VadEvent, check_range};

pub use guards::{
    COMPRESSION_RATIO_THRESHOLD, DEFAULT_LOGPROB_THRESHOLD, DEFAULT_NO_SPEECH_THRESHOLD,
    HALLUCINATION_MAX_SPEECH_SAMPLES, KNOWN_HALLUCINATIONS, MAX_LOOP_NGRAM, MAX_REPEATS,
    MIN_RESTATED_TOKENS, MIN_RESTATED_WORDS, compression_ratio, cut_restated_tail, find_loop,
    is_hallucination, restates_itself, truncate_loops,
};
pub use words::{
    ALIGN_TOLERANCE_SECONDS, MAX_OVERLAP_WORDS, common_prefix, tail_after, words_of,
    words_of_segments,
};

/// Default decode step: 0.5 s of new audio (docs/DESIGN.md, "Streaming policy").
pub const DEFAULT_STEP_SAMPLES: usize = 8_000;

/// Default widest step: 3 s. Beyond that partials are too stale to be worth showing.
pub const DEFAULT_MAX_STEP_SAMPLES: usize = 48_000;

/// Default audio needed before the first partial: 1 s (ufal/whisper_streaming
/// `--min-chunk-size 1.0`; Whisper guesses wildly on shorter buffers).
pub const DEFAULT_MIN_PARTIAL_SAMPLES: usize = 16_000;

/// Decode step on a GPU: 0.25 s. A partial decode there takes tens of milliseconds, so
/// decoding twice as often shows words sooner at little cost (BENCHMARKS.md "GPU capacity",
/// real weights).
pub const GPU_STEP_SAMPLES: usize = 4_000;

/// Audio before an utterance's first partial on a GPU: 0.5 s. With 1 s, an utterance's
/// first words wait for the first partial (BENCHMARKS.md "GPU capacity", real weights).
pub const GPU_MIN_PARTIAL_SAMPLES: usize = 8_000;

/// Audio a partial must cover before its words are committed, on a GPU: 3 s. With the
/// GPU's step, the first two partials cover 0.5 and 0.75 s; their hypotheses often agree on
/// misheard words ("the codon is chest" for "the cut on his chest", base), which, once
/// committed, stay on screen until the final. Not committing them lets the next partials
/// correct them (BENCHMARKS.md "GPU capacity", real weights).
pub const GPU_MIN_COMMIT_SAMPLES: usize = 48_000;

/// Default maximum utterance: 20 s, well inside Whisper's 30 s window so the decode in
/// flight when it is reached still fits (docs/DESIGN.md, "Streaming policy").
pub const DEFAULT_MAX_UTTERANCE_SAMPLES: usize = 320_000;

/// Hard limit of an utterance: Whisper's window, 30 s (openai/whisper `audio.py`
/// `CHUNK_LENGTH`). Reached only when decodes fall far behind; the utterance is then closed
/// as it is.
pub const HARD_MAX_UTTERANCE_SAMPLES: usize = WINDOW_SAMPLES;

/// Samples per encoder frame: 320 (20 ms; 1500 frames per 30 s window, whisper.cpp
/// `n_audio_ctx`).
pub const AUDIO_CTX_FRAME_SAMPLES: usize = 320;

/// Default extra encoder frames beyond the audio: 64 (docs/DESIGN.md "whisper-rs facts": with no
/// margin the decoder loops or hallucinates).
pub const DEFAULT_AUDIO_CTX_MARGIN: u32 = 64;

/// Default smallest `audio_ctx`: 128 frames (2.56 s); smaller contexts make the decoder
/// loop (docs/DESIGN.md, "Streaming policy").
pub const DEFAULT_AUDIO_CTX_FLOOR: u32 = 128;

/// Largest `audio_ctx`: the full 30 s window, 1500 frames (whisper.cpp `n_audio_ctx`).
pub const MAX_AUDIO_CTX: u32 = 1500;

/// `audio_ctx` of final decodes: `None`, the model's full 30 s window, as offline
/// transcription uses. Partials keep [`audio_ctx_for`] (they are many and must be quick);
/// the one final decode per utterance settles the text. Measured with tiny.en on the nine
/// speech fixtures of `audio-fixtures/manifest.tsv` streamed unpaced through the server
/// (317 words, offline WER 0.038): final `audio_ctx` = ceil(samples / 320) + 64 gave
/// streaming WER 0.060, + 256 gave 0.060, + 750 gave 0.047, the full window 0.054. The
/// scaled contexts flip single words from one margin to the next ("hold" became "fold" or
/// was dropped); the full window is the condition the model was trained in. It costs a
/// full-window encoder pass per final (about 1.5 s instead of 0.3 s for a 3 s utterance
/// on two busy cores).
pub const FINAL_AUDIO_CTX: Option<u32> = None;

/// Encoder frames past the audio when a final's context is fitted ([`FinalContext::Fit`]),
/// and for offline VAD chunks (`--chunking fit`): 256 frames, 5.12 s. With the partials'
/// 64 frames and 128-frame floor, short chunks came out as garbage: audio-fixtures' 8 kHz
/// "Please close the door. It is cold." became "Please pots deliver nor it impossible"; with
/// 256 and a 512 floor it reads "Please close the door, it is in cold." as the whole-file
/// decode nearly does.
pub const WIDE_AUDIO_CTX_MARGIN: u32 = 256;

/// Smallest fitted context for finals and offline chunks: 512 frames, 10.24 s (see
/// [`WIDE_AUDIO_CTX_MARGIN`]).
pub const WIDE_AUDIO_CTX_FLOOR: u32 = 512;

/// The encoder context of final decodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FinalContext {
    /// The full 30 s window ([`FINAL_AUDIO_CTX`]): the condition Whisper was trained in.
    #[default]
    Full,
    /// Fitted to the utterance with the wide margin and floor ([`WIDE_AUDIO_CTX_MARGIN`],
    /// [`WIDE_AUDIO_CTX_FLOOR`]): a third of the encoder work for utterances under 5 s, for
    /// models whose full-window finals cannot keep up (base on two cores, BENCHMARKS.md
    /// "Streaming efficiency").
    Fit,
}

/// The encoder context of partial decodes, as a setting: what `audio_ctx_floor` and
/// `audio_ctx_margin` it stands for ([`PartialContext::floor_and_margin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartialContext {
    /// The audio so far with the small margin and floor ([`DEFAULT_AUDIO_CTX_MARGIN`],
    /// [`DEFAULT_AUDIO_CTX_FLOOR`]): cheap.
    Fit,
    /// The audio so far with the wide margin and floor of fitted finals
    /// ([`WIDE_AUDIO_CTX_MARGIN`], [`WIDE_AUDIO_CTX_FLOOR`]).
    Wide,
    /// The full 30 s window ([`MAX_AUDIO_CTX`]), as finals.
    Full,
}

impl PartialContext {
    /// `(audio_ctx_floor, audio_ctx_margin)`; with the full window's floor the margin does
    /// not matter, and the small one is given.
    #[must_use]
    pub fn floor_and_margin(self) -> (u32, u32) {
        match self {
            Self::Fit => (DEFAULT_AUDIO_CTX_FLOOR, DEFAULT_AUDIO_CTX_MARGIN),
            Self::Wide => (WIDE_AUDIO_CTX_FLOOR, WIDE_AUDIO_CTX_MARGIN),
            Self::Full => (MAX_AUDIO_CTX, DEFAULT_AUDIO_CTX_MARGIN),
        }
    }
}

/// Tokens a partial may decode at least, whatever its length: 16 (see
/// [`partial_token_limit`]).
pub const PARTIAL_TOKENS_BASE: u32 = 16;

/// Tokens a partial may decode per second of its audio beyond [`PARTIAL_TOKENS_BASE`]: 8,
/// about twice the fastest speech the streaming simulations decoded (long_60s's partials:
/// 66 tokens for 19.7 s; 16 for a 1.8 s sentence), so that only loops reach it.
pub const PARTIAL_TOKENS_PER_SECOND: u32 = 8;

/// Most tokens (the timestamp and text tokens of its one segment) a partial of `samples`
/// decodes when no `max_tokens` is set: [`PARTIAL_TOKENS_BASE`] plus
/// [`PARTIAL_TOKENS_PER_SECOND`] per started second. A partial that loops ("Even even even
/// ...") otherwise runs to whisper.cpp's limit of 220 tokens, and the guards drop it anyway:
/// in the simulated GPU policy with tiny.en, 25 of 574 partials did, a third of all partial
/// decoder steps (BENCHMARKS.md "A token limit for partials").
#[must_use]
pub fn partial_token_limit(samples: usize) -> u32 {
    let seconds = samples.div_ceil(crate::audio::SAMPLE_RATE as usize) as u64;
    let limit = u64::from(PARTIAL_TOKENS_BASE) + u64::from(PARTIAL_TOKENS_PER_SECOND) * seconds;
    limit.min(u64::from(u32::MAX)) as u32
}

/// Default prompt budget: the last 200 characters of previous finals (about 40 words; far
/// below Whisper's 224-token prompt limit, openai/whisper `decoding.py` `n_ctx // 2`).
pub const DEFAULT_PROMPT_MAX_CHARS: usize = 200;

/// Stability of committed interim text (docs/DESIGN.md "Streaming policy": about 0.9).
pub const STABILITY_COMMITTED: f32 = 0.9;

/// Stability of the unconfirmed interim tail (docs/DESIGN.md "Streaming policy": about 0.1).
pub const STABILITY_TAIL: f32 = 0.1;

/// The step widens to this multiple of a decode's cost when the cost exceeds it (docs/DESIGN.md "Streaming policy":
/// "widen the step automatically when inference falls behind").
pub const STEP_WIDEN_FACTOR: f64 = 1.2;

/// When decodes keep up, the step shrinks by at most this factor per result, back towards
/// the configured step.
pub const STEP_SHRINK_FACTOR: f64 = 0.8;

/// Longest audio carried into the next utterance by a cut at the maximum length, as a
/// share of the maximum length; with less committed audio than that, the utterance is
/// decoded whole instead.
pub const MAX_CARRY_SHARE: f64 = 0.5;

/// Longest silence kept after the last committed word when cutting at the maximum length
/// with no next word in sight: 0.2 s (the VAD's default post-roll).
const CUT_PAD_SAMPLES: u64 = 3_200;

/// How far a cut at the maximum length may move, either way, to the quietest
/// [`CUT_QUIET_FRAMES`] around it: 0.2 s. Word times from a fitted-context decode are
/// rough, and a cut inside a word leaves both utterances half of it ("counted the" | "tars
/// until we fell asleep", whose final decode then made up a phrase for the half word).
const CUT_SNAP_SAMPLES: u64 = 3_200;

/// The quiet a cut at the maximum length moves to: 5 frames (100 ms). One 20 ms frame
/// found the closure of the "t" in "counted" as often as the gap after it.
const CUT_QUIET_FRAMES: usize = 5;

/// Policy settings; durations are sample counts at 16 kHz.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// VAD and endpointing (end silence, pre-roll, sensitivity).
    pub vad: VadConfig,
    /// New audio between partial decodes. Default 0.5 s.
    pub step_samples: usize,
    /// Widest step when decodes fall behind. Default 3 s.
    pub max_step_samples: usize,
    /// Utterance audio needed before the first partial. Default 1 s.
    pub min_partial_samples: usize,
    /// Utterance audio a partial must cover before its words can be committed: shorter
    /// hypotheses are shown as the unstable tail only. At most half the maximum utterance
    /// applies, so a long utterance has committed words to be cut at. Default 0 (CPU; its
    /// first two partials already cover 1 and 1.5 s); [`GPU_MIN_COMMIT_SAMPLES`] on GPUs.
    pub min_commit_samples: usize,
    /// Utterance length that forces a final (cut at a committed word). Default 20 s.
    pub max_utterance_samples: usize,
    /// Extra encoder frames beyond the audio. Default 64.
    pub audio_ctx_margin: u32,
    /// Smallest `audio_ctx`. Default 128 frames.
    pub audio_ctx_floor: u32,
    /// Characters of previous finals passed as the prompt (0: none). Default 200.
    pub prompt_max_chars: usize,
    /// The user's prompt (spellings, style), put before previous finals.
    pub initial_prompt: Option<String>,
    /// Spoken language (ISO 639-1); `None` detects it once per utterance.
    pub language: Option<String>,
    /// Translate to English.
    pub translate: bool,
    /// Decode partials (interim results). Without them only finals are decoded.
    pub interim_results: bool,
    /// Ask for word timings on partials too (needed to cut long utterances at a word).
    pub partial_word_timestamps: bool,
    /// Whisper's no-speech threshold. Default 0.6.
    pub no_speech_threshold: f32,
    /// Whisper's log-probability threshold of the no-speech test. Default -1.0.
    pub logprob_threshold: f32,
    /// Encoder context of finals. Default [`FinalContext::Full`].
    pub final_context: FinalContext,
    /// Upper bound on text tokens per decode (`None`: the model's for finals, and
    /// [`partial_token_limit`] for partials when `limit_partial_tokens`). Default none.
    pub max_tokens: Option<u32>,
    /// Without `max_tokens`, partials decode at most [`partial_token_limit`] tokens, so that
    /// a partial that loops stops early. Default on.
    pub limit_partial_tokens: bool,
    /// Partials end as soon as their text restates itself (`DecodeOptions::stop_restated`),
    /// instead of restating to their token limit. Default on.
    pub stop_restated_partials: bool,
    /// Whisper's temperature fallback on finals (never on partials). Default on.
    pub temperature_fallback: bool,
    /// Decode without timestamp tokens (see `DecodeOptions::no_timestamps`). Default off.
    pub no_timestamps: bool,
    /// Partials start from the utterance's committed words as the decoder prefix
    /// (`DecodeOptions::prefix`): only the words after them are generated token by token,
    /// and a partial's hypothesis never revises them. Default off.
    pub partial_prefix: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            vad: VadConfig::default(),
            step_samples: DEFAULT_STEP_SAMPLES,
            max_step_samples: DEFAULT_MAX_STEP_SAMPLES,
            min_partial_samples: DEFAULT_MIN_PARTIAL_SAMPLES,
            min_commit_samples: 0,
            max_utterance_samples: DEFAULT_MAX_UTTERANCE_SAMPLES,
            audio_ctx_margin: DEFAULT_AUDIO_CTX_MARGIN,
            audio_ctx_floor: DEFAULT_AUDIO_CTX_FLOOR,
            prompt_max_chars: DEFAULT_PROMPT_MAX_CHARS,
            initial_prompt: None,
            language: None,
            translate: false,
            interim_results: true,
            partial_word_timestamps: true,
            no_speech_threshold: DEFAULT_NO_SPEECH_THRESHOLD,
            logprob_threshold: DEFAULT_LOGPROB_THRESHOLD,
            final_context: FinalContext::Full,
            max_tokens: None,
            limit_partial_tokens: true,
            stop_restated_partials: true,
            temperature_fallback: true,
            no_timestamps: false,
            partial_prefix: false,
        }
    }
}

impl PolicyConfig {
    /// The defaults for a device: [`PolicyConfig::default`] on the CPU; on a GPU, the
    /// shorter step and first partial its decode speed affords ([`GPU_STEP_SAMPLES`],
    /// [`GPU_MIN_PARTIAL_SAMPLES`]), and commits only from [`GPU_MIN_COMMIT_SAMPLES`] of
    /// audio on.
    #[must_use]
    pub fn for_device(gpu: bool) -> Self {
        let defaults = Self::default();
        if gpu {
            Self {
                step_samples: GPU_STEP_SAMPLES,
                min_partial_samples: GPU_MIN_PARTIAL_SAMPLES,
                min_commit_samples: GPU_MIN_COMMIT_SAMPLES,
                ..defaults
            }
        } else {
            defaults
        }
    }

    /// Checks every field (the VAD's too).
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad field: step outside 20 ms..10 s, max step below
    /// the step or above 30 s, minimum partial above the maximum utterance, minimum commit
    /// above 10 s, maximum
    /// utterance outside 1..30 s, `audio_ctx` floor or margin above 1500, prompt budget
    /// above 1000 characters, thresholds outside their ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.vad.validate()?;
        let rate = f64::from(crate::audio::SAMPLE_RATE);
        let window = HARD_MAX_UTTERANCE_SAMPLES as f64;
        check_range(
            "step_samples",
            self.step_samples as f64,
            FRAME_SAMPLES as f64,
            10.0 * rate,
        )?;
        check_range(
            "max_step_samples",
            self.max_step_samples as f64,
            self.step_samples as f64,
            window,
        )?;
        check_range(
            "max_utterance_samples",
            self.max_utterance_samples as f64,
            rate,
            window,
        )?;
        check_range(
            "min_partial_samples",
            self.min_partial_samples as f64,
            0.0,
            self.max_utterance_samples as f64,
        )?;
        check_range(
            "min_commit_samples",
            self.min_commit_samples as f64,
            0.0,
            10.0 * rate,
        )?;
        check_range(
            "audio_ctx_margin",
            f64::from(self.audio_ctx_margin),
            0.0,
            f64::from(MAX_AUDIO_CTX),
        )?;
        check_range(
            "audio_ctx_floor",
            f64::from(self.audio_ctx_floor),
            0.0,
            f64::from(MAX_AUDIO_CTX),
        )?;
        check_range(
            "prompt_max_chars",
            self.prompt_max_chars as f64,
            0.0,
            1000.0,
        )?;
        check_range(
            "no_speech_threshold",
            f64::from(self.no_speech_threshold),
            0.0,
            1.0,
        )?;
        check_range(
            "logprob_threshold",
            f64::from(self.logprob_threshold),
            -100.0,
            0.0,
        )?;
        if self.language.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::Inconsistent {
                field: "language",
                reason: "empty language code (use None to detect)".into(),
            });
        }
        Ok(())
    }
}

/// `audio_ctx` for a buffer of `samples`: ceil(samples / 320) + `margin`, at least `floor`,
/// at most 1500 (docs/DESIGN.md "whisper-rs facts").
pub fn audio_ctx_for(samples: usize, margin: u32, floor: u32) -> u32 {
    let frames = samples.div_ceil(AUDIO_CTX_FRAME_SAMPLES) as u64 + u64::from(margin);
    frames.max(u64::from(floor)).min(u64::from(MAX_AUDIO_CTX)) as u32
}

/// What a decode is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// A revisable hypothesis of the open utterance (interim results).
    Partial,
    /// The settled text of a closed utterance.
    Final,
}

/// One decode to run: transcribe `samples` with `options`, then pass the result to
/// [`StreamingPolicy::on_result`] with `id`.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodeJob {
    /// Identifies the job in [`StreamingPolicy::on_result`].
    pub id: u64,
    /// The utterance it decodes (see the module doc on indices).
    pub utterance_index: u64,
    /// Partial or final.
    pub kind: JobKind,
    /// The utterance audio (16 kHz mono), from its start.
    pub samples: Vec<f32>,
    /// Absolute position of `samples[0]` in the stream.
    pub offset_samples: u64,
    /// How to decode it.
    pub options: DecodeOptions,
}

impl DecodeJob {
    /// Absolute position one past the job's last sample.
    pub fn end_samples(&self) -> u64 {
        self.offset_samples + self.samples.len() as u64
    }
}

/// Why an utterance became final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// The VAD heard the end silence.
    Endpoint,
    /// The client asked ([`StreamingPolicy::finalize`]).
    Finalize,
    /// The audio ended ([`StreamingPolicy::end_of_stream`]).
    EndOfStream,
    /// The utterance reached the maximum length.
    MaxLength,
}

/// Something to tell the client.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyEvent {
    /// The VAD heard speech start (voice activity event).
    SpeechStarted {
        /// Absolute position (pre-roll included).
        sample: u64,
    },
    /// The VAD heard speech end, or the client finalized during speech.
    SpeechEnded {
        /// Absolute position (post-roll included).
        sample: u64,
    },
    /// A revisable result for an utterance: replaces earlier interims with the same index.
    /// Both texts empty means "clear it" (the utterance was dropped).
    Interim {
        /// Which utterance.
        utterance_index: u64,
        /// Text committed by agreement; only ever grows within an utterance.
        committed: String,
        /// The unconfirmed rest of the latest hypothesis.
        tail: String,
        /// Stability of `committed` ([`STABILITY_COMMITTED`]).
        stability_committed: f32,
        /// Stability of `tail` ([`STABILITY_TAIL`]).
        stability_tail: f32,
        /// Absolute end of the audio this hypothesis heard.
        audio_end_samples: u64,
    },
    /// The settled text of an utterance; exactly one per index.
    Final {
        /// Which utterance.
        utterance_index: u64,
        /// Its text.
        text: String,
        /// Its words, times absolute in seconds, monotonic and inside the utterance.
        words: Vec<Word>,
        /// Absolute start of the utterance's audio.
        start_samples: u64,
        /// Absolute end of the utterance's audio.
        end_samples: u64,
        /// Language detected or forced, if known.
        language: Option<String>,
        /// Why it became final.
        reason: EndReason,
    },
    /// A decode failed. For [`FailureKind::Inference`] and [`FailureKind::InvalidOptions`]
    /// the stream should end with an error; a failed final's utterance is dropped.
    DecodeFailed {
        /// The job.
        job_id: u64,
        /// Its utterance.
        utterance_index: u64,
        /// Partial or final.
        kind: JobKind,
        /// What failed.
        failure: FailureKind,
        /// The engine's message (for logs, not for clients).
        message: String,
    },
}

/// Where a stream stands, for progress reports (all absolute sample positions).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Samples received.
    pub received_samples: u64,
    /// End of the newest audio a finished decode covered.
    pub processed_samples: u64,
    /// Everything before this position is final and will not change.
    pub final_samples: u64,
}

/// An utterance being collected or waiting for its final.
#[derive(Clone, Debug)]
struct Utterance {
    /// Internal identity (jobs refer to it).
    seq: u64,
    /// Display index, given at its first job.
    index: Option<u64>,
    /// Absolute position of `audio[0]`.
    start: u64,
    audio: Vec<f32>,
    /// Why it was closed (`None` while open).
    reason: Option<EndReason>,
    /// Committed words, absolute seconds.
    committed: Vec<Word>,
    /// The latest partial hypothesis, absolute seconds (after guards).
    hypothesis: Vec<Word>,
    /// Audio length when the last partial job was made.
    decoded_len: usize,
    /// Language of this utterance once detected (or forced).
    language: Option<String>,
    /// The last interim sent, to skip repeats.
    last_interim: Option<(String, String)>,
    /// Whether its final was already decoded again for a loop.
    retried: bool,
}

impl Utterance {
    fn new(seq: u64, start: u64, language: Option<String>) -> Self {
        Self {
            seq,
            index: None,
            start,
            audio: Vec::new(),
            reason: None,
            committed: Vec::new(),
            hypothesis: Vec::new(),
            decoded_len: 0,
            language,
            last_interim: None,
            retried: false,
        }
    }

    fn end(&self) -> u64 {
        self.start + self.audio.len() as u64
    }
}

/// The job in flight.
#[derive(Clone, Debug)]
struct InFlight {
    id: u64,
    seq: u64,
    index: u64,
    kind: JobKind,
    offset: u64,
    end: u64,
    polled_at: u64,
}

/// The streaming policy of one stream. See the module documentation.
#[derive(Clone, Debug)]
pub struct StreamingPolicy {
    config: PolicyConfig,
    vad: Vad,
    /// Samples pushed so far.
    now: u64,
    /// The most recent audio, for backdating utterance starts.
    lookback: Vec<f32>,
    lookback_len: usize,
    open: Option<Utterance>,
    /// Closed utterances waiting for their final, oldest first.
    closed: VecDeque<Utterance>,
    in_flight: Option<InFlight>,
    next_job_id: u64,
    next_seq: u64,
    next_index: u64,
    step: usize,
    /// Recent final text for the prompt (bounded).
    history: String,
    processed: u64,
    /// End of the last closed utterance.
    last_utterance_end: u64,
    ended: bool,
}

impl StreamingPolicy {
    /// A policy with `config`.
    ///
    /// # Errors
    /// [`ConfigError`] when `config` fails [`PolicyConfig::validate`].
    pub fn new(config: PolicyConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let vad = Vad::new(config.vad.clone())?;
        let lookback_len =
            config.vad.pre_roll_samples + config.vad.min_speech_samples + 2 * FRAME_SAMPLES;
        Ok(Self {
            step: config.step_samples,
            config,
            vad,
            now: 0,
            lookback: Vec::with_capacity(lookback_len),
            lookback_len,
            open: None,
            closed: VecDeque::new(),
            in_flight: None,
            next_job_id: 0,
            next_seq: 0,
            next_index: 0,
            history: String::new(),
            processed: 0,
            last_utterance_end: 0,
            ended: false,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The sample clock: samples pushed so far.
    pub fn clock(&self) -> u64 {
        self.now
    }

    /// The current decode step in samples (widened when decodes fall behind).
    pub fn step_samples(&self) -> usize {
        self.step
    }

    /// Whether the VAD is inside speech.
    pub fn is_speaking(&self) -> bool {
        self.vad.is_speaking()
    }

    /// Whether a job is in flight.
    pub fn has_job_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Received, processed and final positions. Each only grows.
    pub fn progress(&self) -> Progress {
        let final_samples = match self.closed.front().or(self.open.as_ref()) {
            Some(u) => u.start,
            None if self.ended => self.now,
            // The lookback may still become an utterance's pre-roll.
            None => self
                .now
                .saturating_sub(self.lookback_len as u64)
                .max(self.last_utterance_end),
        };
        Progress {
            received_samples: self.now,
            processed_samples: self.processed,
            final_samples: final_samples.min(self.now),
        }
    }

    /// Whether the stream is over: [`Self::end_of_stream`] was called and every final has
    /// been emitted (or dropped).
    pub fn is_done(&self) -> bool {
        self.ended && self.open.is_none() && self.closed.is_empty() && self.in_flight.is_none()
    }

    /// Feeds audio (16 kHz mono). Runs the VAD, opens and closes utterances, collects
    /// utterance audio and cuts utterances at the maximum length. Audio pushed after
    /// [`Self::end_of_stream`] is ignored.
    #[must_use = "forward the events to the client"]
    pub fn push_audio(&mut self, samples: &[f32]) -> Vec<PolicyEvent> {
        let mut out = Vec::new();
        if self.ended || samples.is_empty() {
            return out;
        }
        let vad_events = self.vad.push(samples);
        let chunk_start = self.now;
        self.now += samples.len() as u64;
        let mut window = std::mem::take(&mut self.lookback);
        let window_start = chunk_start - window.len() as u64;
        window.extend_from_slice(samples);

        for event in vad_events {
            match event {
                VadEvent::SpeechStart { sample } => {
                    out.push(PolicyEvent::SpeechStarted { sample });
                    if self.open.is_none() {
                        self.open_utterance(sample.max(window_start));
                    }
                }
                VadEvent::SpeechEnd { sample } => {
                    out.push(PolicyEvent::SpeechEnded { sample });
                    self.fill(&window, window_start, sample);
                    if let Some(u) = self.open.as_mut() {
                        // The end lies up to the end silence back, maybe in earlier audio.
                        u.audio.truncate(sample.saturating_sub(u.start) as usize);
                    }
                    self.close_open(EndReason::Endpoint);
                }
            }
        }
        self.fill(&window, window_start, self.now);

        let keep = window.len().min(self.lookback_len);
        window.drain(..window.len() - keep);
        self.lookback = window;

        self.enforce_max_length();
        out
    }

    /// Closes the open utterance now (a client's "finalize"): it will get a final. Speech
    /// that goes on starts a new utterance after a fresh onset.
    #[must_use = "forward the events to the client"]
    pub fn finalize(&mut self) -> Vec<PolicyEvent> {
        let mut out = Vec::new();
        if let Some(VadEvent::SpeechEnd { sample }) = self.vad.end_speech() {
            out.push(PolicyEvent::SpeechEnded { sample });
        }
        self.close_open(EndReason::Finalize);
        out
    }

    /// The audio has ended: the open utterance is closed (at the VAD's end of speech) and
    /// will get a final; afterwards only finals are decoded, and [`Self::is_done`] turns
    /// true once they are out.
    #[must_use = "forward the events to the client"]
    pub fn end_of_stream(&mut self) -> Vec<PolicyEvent> {
        let mut out = Vec::new();
        if self.ended {
            return out;
        }
        self.ended = true;
        if let Some(VadEvent::SpeechEnd { sample }) = self.vad.finish() {
            out.push(PolicyEvent::SpeechEnded { sample });
            if let Some(u) = self.open.as_mut() {
                let keep = sample.saturating_sub(u.start) as usize;
                u.audio.truncate(keep);
            }
        }
        self.close_open(EndReason::EndOfStream);
        out
    }

    /// The next decode to run, if one is due and none is in flight: a pending final first,
    /// else a partial of the open utterance once it grew by the step.
    pub fn poll_job(&mut self) -> Option<DecodeJob> {
        if self.in_flight.is_some() {
            return None;
        }
        let (kind, seq) = if let Some(u) = self.closed.front() {
            (JobKind::Final, u.seq)
        } else {
            let u = self.open.as_ref()?;
            let due = self.config.interim_results
                && !self.ended
                && u.audio.len() >= self.config.min_partial_samples.max(1)
                && u.audio.len() - u.decoded_len >= self.step;
            if !due {
                return None;
            }
            (JobKind::Partial, u.seq)
        };
        let prompt = self.prompt();
        let next_index = self.next_index;
        let id = self.next_job_id;
        let translate = self.config.translate;
        let (margin, floor) = (self.config.audio_ctx_margin, self.config.audio_ctx_floor);
        let final_context = self.config.final_context;
        let (max_tokens, fallback) = (self.config.max_tokens, self.config.temperature_fallback);
        let no_timestamps = self.config.no_timestamps;
        let word_timestamps = kind == JobKind::Final || self.config.partial_word_timestamps;
        let partial_prefix = self.config.partial_prefix;
        let limit_partial = self.config.limit_partial_tokens;
        let stop_restated = self.config.stop_restated_partials;
        let u = self.utterance_mut(seq)?;
        let index = *u.index.get_or_insert(next_index);
        let retry = kind == JobKind::Final && u.retried;
        let options = DecodeOptions {
            language: u.language.clone(),
            translate,
            prompt: if retry { None } else { prompt },
            // Finals decode with the full window unless fitted (see `FinalContext`).
            audio_ctx: match (kind, final_context) {
                (JobKind::Partial, _) => Some(audio_ctx_for(u.audio.len(), margin, floor)),
                (JobKind::Final, FinalContext::Full) => FINAL_AUDIO_CTX,
                (JobKind::Final, FinalContext::Fit) => Some(audio_ctx_for(
                    u.audio.len(),
                    WIDE_AUDIO_CTX_MARGIN,
                    WIDE_AUDIO_CTX_FLOOR,
                )),
            },
            word_timestamps,
            temperature_fallback: kind == JobKind::Final && fallback,
            // An explicit bound (fixed work for capacity runs) is kept as it is.
            max_tokens: match (kind, max_tokens) {
                (JobKind::Partial, None) if limit_partial => {
                    Some(partial_token_limit(u.audio.len()))
                }
                _ => max_tokens,
            },
            single_segment: kind == JobKind::Partial,
            no_timestamps,
            prefix: (kind == JobKind::Partial && partial_prefix && !u.committed.is_empty())
                .then(|| words::join_words(&u.committed)),
            stop_restated: kind == JobKind::Partial && stop_restated,
        };
        if kind == JobKind::Partial {
            u.decoded_len = u.audio.len();
        }
        let job = DecodeJob {
            id,
            utterance_index: index,
            kind,
            samples: u.audio.clone(),
            offset_samples: u.start,
            options,
        };
        self.next_job_id += 1;
        self.in_flight = Some(InFlight {
            id,
            seq,
            index,
            kind,
            offset: job.offset_samples,
            end: job.end_samples(),
            polled_at: self.now,
        });
        Some(job)
    }

    /// Takes the result of job `job_id`. A result for an unknown or stale job is ignored
    /// (no events).
    #[must_use = "forward the events to the client"]
    pub fn on_result(
        &mut self,
        job_id: u64,
        result: Result<Transcript, EngineError>,
    ) -> Vec<PolicyEvent> {
        let mut out = Vec::new();
        let Some(job) = self.in_flight.take_if(|j| j.id == job_id) else {
            return out;
        };
        self.adapt_step(self.now - job.polled_at);
        match result {
            Err(error) => {
                let failure = FailureKind::from(&error);
                if job.kind == JobKind::Final {
                    // The utterance cannot be finalised: drop it, keep its index.
                    if let Some(u) = self.take_closed(job.seq) {
                        clear_interim(&u, &mut out);
                    }
                }
                if failure != FailureKind::Cancelled {
                    out.push(PolicyEvent::DecodeFailed {
                        job_id,
                        utterance_index: job.index,
                        kind: job.kind,
                        failure,
                        message: error.to_string(),
                    });
                }
            }
            Ok(transcript) => {
                self.processed = self.processed.max(job.end);
                match job.kind {
                    JobKind::Partial => {
                        self.apply_partial(&job, &transcript, &mut out);
                        self.enforce_max_length();
                    }
                    JobKind::Final => self.apply_final(&job, &transcript, &mut out),
                }
            }
        }
        out
    }

    // ---- internals ----

    fn utterance_mut(&mut self, seq: u64) -> Option<&mut Utterance> {
        if let Some(u) = self.open.as_mut().filter(|u| u.seq == seq) {
            return Some(u);
        }
        self.closed.iter_mut().find(|u| u.seq == seq)
    }

    fn take_closed(&mut self, seq: u64) -> Option<Utterance> {
        let pos = self.closed.iter().position(|u| u.seq == seq)?;
        self.closed.remove(pos)
    }

    fn open_utterance(&mut self, start: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.open = Some(Utterance::new(seq, start, self.config.language.clone()));
    }

    fn close_open(&mut self, reason: EndReason) {
        if let Some(mut u) = self.open.take() {
            if u.audio.is_empty() {
                return;
            }
            u.reason = Some(reason);
            self.last_utterance_end = u.end();
            self.closed.push_back(u);
        }
    }

    /// Appends window audio to the open utterance up to absolute position `upto`, closing it
    /// at the hard maximum length (and continuing in a new one).
    fn fill(&mut self, window: &[f32], window_start: u64, upto: u64) {
        loop {
            let Some(u) = self.open.as_mut() else {
                return;
            };
            let have = u.end().max(window_start);
            if have >= upto {
                return;
            }
            let room = (HARD_MAX_UTTERANCE_SAMPLES - u.audio.len()) as u64;
            let to = upto.min(have + room);
            let (a, b) = ((have - window_start) as usize, (to - window_start) as usize);
            u.audio.extend_from_slice(&window[a..b.min(window.len())]);
            if u.audio.len() >= HARD_MAX_UTTERANCE_SAMPLES {
                self.close_open(EndReason::MaxLength);
                self.open_utterance(to);
            }
        }
    }

    /// At the maximum length: cut the open utterance after its last committed word (the audio
    /// before the cut closed for a final decode, the rest carried over into a new utterance),
    /// or close it whole for a final decode.
    fn enforce_max_length(&mut self) {
        let Some(u) = self.open.as_ref() else {
            return;
        };
        if u.audio.len() < self.config.max_utterance_samples {
            return;
        }
        let busy = self.in_flight.as_ref().is_some_and(|j| j.seq == u.seq);
        if busy {
            return; // decide once its hypothesis is in
        }
        let max_carry = (self.config.max_utterance_samples as f64 * MAX_CARRY_SHARE) as u64;
        let cut = self
            .cut_point(u)
            .filter(|&c| c > u.start && u.end() - c <= max_carry && self.closed.is_empty());
        let Some(cut) = cut else {
            let end = u.end();
            self.close_open(EndReason::MaxLength);
            self.open_utterance(end);
            return;
        };
        let Some(mut u) = self.open.take() else {
            return;
        };
        let keep = (cut - u.start) as usize;
        let carried = u.audio.split_off(keep);
        // The audio up to the cut gets a final decode like any closed utterance: committed
        // words from partials can be a loop two partials agreed on (tiny.en restated whole
        // sentences into a 20 s utterance's committed words), and they stand only when the
        // final decode hears nothing.
        words::clamp_times(
            &mut u.committed,
            0.0,
            samples_to_seconds(u.start as usize),
            samples_to_seconds(cut as usize),
        );
        u.reason = Some(EndReason::MaxLength);
        self.last_utterance_end = cut;
        self.closed.push_back(u);
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut next = Utterance::new(seq, cut, self.config.language.clone());
        next.audio = carried;
        self.open = Some(next);
    }

    /// Where to cut an utterance after its committed words: halfway to the next word of the
    /// latest hypothesis, or a short pad after the last committed word; then moved to the
    /// middle of the quietest [`CUT_QUIET_FRAMES`] within [`CUT_SNAP_SAMPLES`] of that.
    fn cut_point(&self, u: &Utterance) -> Option<u64> {
        let last = u.committed.last()?;
        let last_end = seconds_to_samples(last.end) as u64;
        let next_start = words::tail_after(&u.hypothesis, &u.committed)
            .first()
            .map(|w| seconds_to_samples(w.start) as u64);
        let cut = match next_start {
            Some(next) if next > last_end => last_end + (next - last_end) / 2,
            Some(_) => last_end,
            None => last_end + CUT_PAD_SAMPLES,
        };
        let cut = cut.clamp(u.start, u.end());
        let near = cut.saturating_sub(CUT_SNAP_SAMPLES).max(u.start) - u.start;
        let far = (cut + CUT_SNAP_SAMPLES).min(u.end()) - u.start;
        let quiet = vad::quietest_frames(&u.audio, near as usize..far as usize, CUT_QUIET_FRAMES)
            .map(|q| u.start + (q.start + q.end) as u64 / 2);
        Some(quiet.unwrap_or(cut))
    }

    fn adapt_step(&mut self, cost: u64) {
        let base = self.config.step_samples;
        let max = self.config.max_step_samples;
        let target = (cost as f64 * STEP_WIDEN_FACTOR).round() as usize;
        self.step = if target > self.step {
            target.min(max)
        } else {
            let shrunk = (self.step as f64 * STEP_SHRINK_FACTOR) as usize;
            shrunk.max(target).max(base).min(max)
        };
    }

    /// The prompt: the user's prompt, then the last `prompt_max_chars` of previous finals
    /// (starting at a word boundary).
    fn prompt(&self) -> Option<String> {
        let mut parts: Vec<&str> = Vec::new();
        if let Some(p) = self
            .config
            .initial_prompt
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            parts.push(p);
        }
        let tail = tail_chars(&self.history, self.config.prompt_max_chars);
        if !tail.is_empty() {
            parts.push(tail);
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// Keeps segments Whisper does not mark as silence.
    fn speech_words(&self, transcript: &Transcript, offset: u64) -> Vec<Word> {
        let kept = transcript.segments.iter().filter(|s| {
            !guards::is_silent_segment(
                s,
                self.config.no_speech_threshold,
                self.config.logprob_threshold,
            )
        });
        words::words_of_segments(kept, samples_to_seconds(offset as usize))
    }

    fn apply_partial(
        &mut self,
        job: &InFlight,
        transcript: &Transcript,
        out: &mut Vec<PolicyEvent>,
    ) {
        let mut hypothesis = self.speech_words(transcript, job.offset);
        let speech = self.vad.speech_samples_between(job.offset, job.end);
        if guards::is_hallucination(&words::join_words(&hypothesis), speech) {
            hypothesis.clear();
        }
        // A decode that restarted its own text at the end keeps the first telling, however
        // many times it restated it (a phrase longer than `find_loop`'s n-grams, restated
        // until the token limit, is the usual partial loop of fitted context).
        let hypothesis = guards::cut_restated_tail(guards::truncate_loops(hypothesis));
        // A decode that still loops (a phrase repeated up to MAX_REPEATS times inside the
        // text, a restatement Whisper's compression-ratio test catches) is neither shown nor
        // agreed on, as Whisper would not keep it either; partials get no retry, the next
        // comes a step later.
        if guards::is_repetitive(&hypothesis, &words::join_words(&hypothesis)) {
            return;
        }
        let detect = self.config.language.is_none();
        let min_commit = self
            .config
            .min_commit_samples
            .min(self.config.max_utterance_samples / 2) as u64;
        let Some(u) = self.utterance_mut(job.seq) else {
            return;
        };
        if detect && u.language.is_none() {
            u.language.clone_from(&transcript.language);
        }
        let previous = words::tail_after(&u.hypothesis, &u.committed);
        let current = words::tail_after(&hypothesis, &u.committed);
        // Hypotheses of an utterance's first seconds are shown, not committed (see
        // `PolicyConfig::min_commit_samples`).
        let covered = job.end.saturating_sub(u.start);
        let agreed = if covered < min_commit {
            0
        } else {
            words::common_prefix(previous, current)
        };
        let mut newly: Vec<Word> = current[..agreed].to_vec();
        let tail = words::join_words(&current[agreed..]);
        let start = samples_to_seconds(u.start as usize);
        let after = u.committed.last().map_or(start, |w| w.end);
        words::clamp_times(
            &mut newly,
            after,
            start,
            samples_to_seconds(job.end as usize),
        );
        u.committed.extend(newly);
        u.hypothesis = hypothesis;
        let committed = words::join_words(&u.committed);
        if committed.is_empty() && tail.is_empty() && u.last_interim.is_none() {
            return;
        }
        let pair = (committed, tail);
        if u.last_interim.as_ref() == Some(&pair) {
            return;
        }
        u.last_interim = Some(pair.clone());
        out.push(PolicyEvent::Interim {
            utterance_index: job.index,
            committed: pair.0,
            tail: pair.1,
            stability_committed: STABILITY_COMMITTED,
            stability_tail: STABILITY_TAIL,
            audio_end_samples: job.end,
        });
    }

    fn apply_final(&mut self, job: &InFlight, transcript: &Transcript, out: &mut Vec<PolicyEvent>) {
        let decoded = self.speech_words(transcript, job.offset);
        let Some(mut u) = self.take_closed(job.seq) else {
            return;
        };
        let start_s = samples_to_seconds(u.start as usize);
        let end_s = samples_to_seconds(u.end() as usize);
        // The final decode heard the whole utterance with the full window, so its words
        // replace the committed ones (measured: committed words from scaled-context partials
        // cost tiny.en 3-9 WER points on real-time paced fixtures; see the module doc).
        // Committed words stand only when the final decode heard nothing.
        let mut all = if decoded.is_empty() {
            u.committed.clone()
        } else {
            decoded
        };
        if guards::is_repetitive(&all, &words::join_words(&all)) {
            if !u.retried {
                // Decode once more without the prompt (docs/DESIGN.md "Streaming policy": "decoded again without the prompt
                // or at a higher temperature"); temperature fallback stays on.
                u.retried = true;
                self.closed.push_front(u);
                return;
            }
            all = guards::truncate_loops(all);
        }
        words::clamp_times(&mut all, start_s, start_s, end_s);
        let text = words::join_words(&all);
        let speech = self.vad.speech_samples_between(u.start, u.end());
        if guards::is_hallucination(&text, speech) {
            clear_interim(&u, out);
            return;
        }
        let language = u.language.clone().or_else(|| transcript.language.clone());
        let reason = u.reason.unwrap_or(EndReason::Endpoint);
        self.emit_final(
            job.index,
            text,
            all,
            u.start,
            u.end(),
            language,
            reason,
            out,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_final(
        &mut self,
        utterance_index: u64,
        text: String,
        words: Vec<Word>,
        start_samples: u64,
        end_samples: u64,
        language: Option<String>,
        reason: EndReason,
        out: &mut Vec<PolicyEvent>,
    ) {
        self.next_index = utterance_index + 1;
        if !self.history.is_empty() {
            self.history.push(' ');
        }
        self.history.push_str(&text);
        self.history = tail_chars(&self.history, self.config.prompt_max_chars * 2).to_string();
        out.push(PolicyEvent::Final {
            utterance_index,
            text,
            words,
            start_samples,
            end_samples,
            language,
            reason,
        });
    }
}

/// An empty interim for a dropped utterance that had shown text.
fn clear_interim(u: &Utterance, out: &mut Vec<PolicyEvent>) {
    if let (Some(index), Some(_)) = (u.index, u.last_interim.as_ref()) {
        out.push(PolicyEvent::Interim {
            utterance_index: index,
            committed: String::new(),
            tail: String::new(),
            stability_committed: STABILITY_COMMITTED,
            stability_tail: STABILITY_TAIL,
            audio_end_samples: u.end(),
        });
    }
}

/// The last at most `max_chars` characters of `text`, starting at a word boundary.
fn tail_chars(text: &str, max_chars: usize) -> &str {
    let text = text.trim();
    if max_chars == 0 {
        return "";
    }
    let count = text.chars().count();
    if count <= max_chars {
        return text;
    }
    let cut = text
        .char_indices()
        .nth(count - max_chars)
        .map_or(text.len(), |(i, _)| i);
    let rest = &text[cut..];
    // Skip a partial first word.
    let starts_mid_word = !text[..cut].ends_with(char::is_whitespace);
    match rest.find(char::is_whitespace) {
        Some(sp) if starts_mid_word => rest[sp..].trim_start(),
        // A lone word fragment: drop it where words are spaced, keep it otherwise (CJK).
        None if starts_mid_word && text.contains(char::is_whitespace) => "",
        _ => rest.trim_start(),
    }
}

#[cfg(test)]
mod tests;
