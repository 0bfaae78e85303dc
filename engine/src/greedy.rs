//! Greedy decoding driven here on whisper.cpp's own encoder and decoder steps
//! (`whisper_encode_with_state`, `whisper_decode_with_state`), with a **decoder prefix**:
//! tokens forced after the task tokens, as OpenAI Whisper's `prefix` option does. A streaming
//! partial re-decodes its whole utterance every step; with the words it already committed as
//! the prefix, the prefix costs one batched decoder call and only the tail is generated token
//! by token.
//!
//! The logit rules are whisper.cpp's for a greedy, timestamp-free decode
//! (`whisper_process_logits` with `no_timestamps`, `suppress_blank` and `suppress_nst`, as
//! [`crate::WhisperSession`] sets them): the no-timestamps, start, no-speech, task, language
//! and previous-text tokens, every timestamp, and the non-speech symbols (with and without a
//! leading space, plus " -" and " '") never come out; the first generated token is neither a
//! blank nor the end. Without a prefix the result is whisper.cpp's `whisper_full` text for
//! the same audio and settings (`single_segment`, `no_timestamps`, no fallback, the full 30 s
//! encoder window): `engine/tests/greedy_prefix.rs` checks that on the speech fixtures.
//!
//! Streaming does not use this loop: it gives no word times or no-speech probability, which
//! the policy's partials use. `whisper_full` takes a prefix itself in our vendored
//! whisper.cpp (`DecodeOptions::prefix`, VENDORED.md change 6); this loop is the independent
//! reference `engine/tests/decoder_prefix.rs` checks it against. BENCHMARKS.md "Prefix
//! decoding" has what a prefix saves.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use whisper_rs::{WhisperContext, WhisperState};

use transcribe_core::EngineError;

use crate::session::at_least_min_decode;
use crate::{LoadError, WhisperModel};

/// Symbols whisper.cpp suppresses as non-speech (`non_speech_tokens`, from openai/whisper's
/// tokenizer), each also with a leading space.
#[rustfmt::skip]
const NON_SPEECH: &[&str] = &[
    "\"", "#", "(", ")", "*", "+", "/", ":", ";", "<", "=", ">", "@", "[", "\\", "]", "^", "_",
    "`", "{", "|", "}", "~", "「", "」", "『", "』", "<<", ">>", "<<<", ">>>", "--", "---", "-(",
    "-[", "('", "(\"", "((", "))", "(((", ")))", "[[", "]]", "{{", "}}", "♪♪", "♪♪♪", "♩", "♪",
    "♫", "♬", "♭", "♮", "♯",
];

/// Tokens suppressed only at the start of a word (whisper.cpp allows them between words).
const WORD_START_ONLY: &[&str] = &[" -", " '"];

/// What one greedy decode produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GreedyOutput {
    /// Prefix and generated text, trimmed.
    pub text: String,
    /// The tokens generated after the prefix (without the end token).
    pub generated: Vec<i32>,
    /// Decoder calls made: one batched call for the task tokens and prefix, then one per
    /// generated token (the end token's included).
    pub decoder_calls: usize,
    /// Time in the mel spectrogram and the encoder.
    pub encode_time: Duration,
    /// Time in the decoder calls and picking tokens.
    pub decode_time: Duration,
}

/// A greedy decoder with its own whisper.cpp state (KV cache and buffers).
pub struct GreedyDecoder {
    model: WhisperModel,
    state: WhisperState,
    /// Token ids never generated.
    suppressed: Vec<i32>,
    /// Token ids not generated first (blank, end).
    not_first: [i32; 2],
    threads: usize,
}

fn failed(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Inference(format!("{what}: {e}"))
}

/// The text tokens' ids by their bytes.
fn text_tokens(ctx: &WhisperContext) -> HashMap<Vec<u8>, i32> {
    (0..ctx.token_eot())
        .filter_map(|id| ctx.token_to_bytes(id).ok().map(|b| (b.to_vec(), id)))
        .collect()
}

impl GreedyDecoder {
    /// A decoder for `model`, with the model's thread count.
    ///
    /// # Errors
    /// [`LoadError::State`] when whisper.cpp cannot allocate a state.
    pub fn new(model: &WhisperModel) -> Result<Self, LoadError> {
        let ctx = model.context();
        let state = ctx.create_state().map_err(|e| LoadError::State {
            path: model.path().to_owned(),
            reason: e.to_string(),
        })?;
        let mut suppressed = vec![
            ctx.token_not(),
            ctx.token_sot(),
            ctx.token_nosp(),
            ctx.token_solm(),
            ctx.token_translate(),
            ctx.token_transcribe(),
            ctx.token_prev(),
        ];
        let n_vocab = ctx.n_vocab();
        suppressed.extend(ctx.token_beg()..n_vocab);
        if let Some(max_lang) = whisper_rs::get_lang_max_id().checked_add(1) {
            suppressed.extend((0..max_lang).map(|i| ctx.token_lang(i)));
        }
        let by_text = text_tokens(ctx);
        let id = |text: &str| by_text.get(text.as_bytes()).copied();
        for symbol in NON_SPEECH {
            suppressed.extend(id(symbol));
            suppressed.extend(id(&format!(" {symbol}")));
        }
        suppressed.extend(WORD_START_ONLY.iter().filter_map(|t| id(t)));
        suppressed.retain(|&id| (0..n_vocab).contains(&id));
        suppressed.sort_unstable();
        suppressed.dedup();
        let blank = id(" ").unwrap_or(ctx.token_eot());
        Ok(Self {
            model: model.clone(),
            state,
            suppressed,
            not_first: [ctx.token_eot(), blank],
            threads: model.config().threads.max(1),
        })
    }

    /// Decodes `samples` (at most 30 s at 16 kHz) greedily after `prefix`, generating at most
    /// `max_tokens` tokens (0: the model's limit, half its text context).
    ///
    /// # Errors
    /// [`EngineError::InvalidOptions`] for an unknown language, [`EngineError::Inference`]
    /// when whisper.cpp fails a call.
    pub fn decode(
        &mut self,
        samples: &[f32],
        language: Option<&str>,
        prefix: &[i32],
        max_tokens: usize,
    ) -> Result<GreedyOutput, EngineError> {
        let ctx = self.model.context();
        let mut prompt = vec![ctx.token_sot()];
        if self.model.is_multilingual() {
            let lang = language.unwrap_or("en");
            let id = whisper_rs::get_lang_id(lang)
                .ok_or_else(|| EngineError::InvalidOptions(format!("unknown language {lang:?}")))?;
            prompt.push(ctx.token_lang(id));
            prompt.push(ctx.token_transcribe());
        }
        prompt.push(ctx.token_not());
        let task_len = prompt.len();
        prompt.extend_from_slice(prefix);
        // whisper.cpp's loop bound: half the text context, less the four task tokens.
        let limit = usize::try_from(ctx.n_text_ctx() / 2 - 4).unwrap_or(0);
        let limit = limit.saturating_sub(prefix.len());
        let max_new = if max_tokens == 0 {
            limit
        } else {
            max_tokens.min(limit)
        };

        let threads = self.threads;
        // Short input is padded as every other decode's is (whisper.cpp misreads a few samples).
        let samples = at_least_min_decode(samples);
        let start = Instant::now();
        self.state
            .pcm_to_mel(&samples, threads)
            .map_err(|e| failed("mel", e))?;
        self.state
            .encode(0, threads)
            .map_err(|e| failed("encoder", e))?;
        let encode_time = start.elapsed();
        let start = Instant::now();
        // The task tokens and the prefix in one call. whisper-rs hands back the logits of a
        // call's first token only, so the last one goes in a call of its own.
        let (head, last) = prompt.split_at(prompt.len() - 1);
        let mut calls = 0;
        if !head.is_empty() {
            self.state
                .decode(head, 0, threads)
                .map_err(|e| failed("decoder", e))?;
            calls += 1;
        }
        let mut n_past = head.len();
        let mut next = last[0];
        let eot = ctx.token_eot();
        let mut generated = Vec::new();
        while generated.len() < max_new {
            self.state
                .decode(&[next], n_past, threads)
                .map_err(|e| failed("decoder", e))?;
            calls += 1;
            n_past += 1;
            let logits = self.state.get_logits().map_err(|e| failed("logits", e))?;
            // whisper.cpp keeps a blank or the end from coming first (`suppress_blank`); after
            // a prefix the end may come at once (nothing new was said).
            let token = self.pick(logits, generated.is_empty() && prefix.is_empty());
            if token == eot {
                break;
            }
            generated.push(token);
            next = token;
        }
        let decode_time = start.elapsed();
        let mut bytes = Vec::new();
        for &t in prompt[task_len..].iter().chain(&generated) {
            if let Ok(b) = ctx.token_to_bytes(t) {
                bytes.extend_from_slice(b);
            }
        }
        Ok(GreedyOutput {
            text: String::from_utf8_lossy(&bytes).trim().to_owned(),
            generated,
            decoder_calls: calls,
            encode_time,
            decode_time,
        })
    }

    /// The most likely allowed token.
    fn pick(&self, logits: &[f32], first: bool) -> i32 {
        let mut best = (f32::NEG_INFINITY, self.not_first[0]);
        let mut skip = self.suppressed.iter().peekable();
        for (id, &logit) in logits.iter().enumerate() {
            let id = id as i32;
            while skip.peek().is_some_and(|&&s| s < id) {
                skip.next();
            }
            if skip.peek() == Some(&&id) || (first && self.not_first.contains(&id)) {
                continue;
            }
            if logit > best.0 {
                best = (logit, id);
            }
        }
        best.1
    }
}
