//! One decoder step for several streams at once, on our vendored whisper.cpp's
//! `whisper_decode_multi_with_states` (vendor/whisper-rs-sys/VENDORED.md): token i is
//! decoded on state i, the layers' matrix products run once for all tokens, attention runs
//! per state. This is batching across streams; it is measured ([`time_streams`], through
//! `transcribe models bench --streams`; BENCHMARKS.md "Batching across streams"), tested in
//! `tests/multi_decode.rs`, and not used by the server's workers (it is slower than they are).
//!
//! whisper-rs hides the raw context and state pointers that the call needs, so this module
//! loads its own context through whisper-rs-sys: [`MultiModel`] and its [`MultiState`]s.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::path::Path;

use transcribe_core::EngineError;
use whisper_rs_sys as sys;

use crate::EngineConfig;

/// The most states one multi-state step takes (whisper.cpp's `WHISPER_MULTI_MAX_STATES`).
pub const MAX_STATES: usize = sys::WHISPER_MULTI_MAX_STATES as usize;

fn failed(what: &str) -> EngineError {
    EngineError::Inference(format!("whisper.cpp failed: {what}"))
}

/// A loaded model for multi-state decoding (its own whisper.cpp context).
pub struct MultiModel {
    ctx: *mut sys::whisper_context,
    threads: i32,
}

// SAFETY: whisper.cpp's context is read-only after loading; each state holds the mutable
// parts, and a state is used by one thread at a time (`&mut MultiState`).
unsafe impl Send for MultiModel {}
unsafe impl Sync for MultiModel {}

impl MultiModel {
    /// Loads `path` with `config`'s GPU and flash-attention settings (multi-state steps need
    /// flash attention).
    ///
    /// # Errors
    /// [`EngineError::Inference`] when whisper.cpp cannot load the file.
    pub fn load(path: &Path, config: &EngineConfig) -> Result<Self, EngineError> {
        crate::quiet_whisper_logs();
        let c_path = CString::new(path.to_string_lossy().as_bytes())
            .map_err(|_| EngineError::InvalidOptions("model path with a NUL byte".into()))?;
        // SAFETY: plain C calls; the params struct is returned by value and filled here.
        let ctx = unsafe {
            let mut params = sys::whisper_context_default_params();
            params.use_gpu = config.use_gpu;
            params.flash_attn = config.flash_attn;
            params.gpu_device = config.gpu_device;
            sys::whisper_init_from_file_with_params_no_state(c_path.as_ptr(), params)
        };
        if ctx.is_null() {
            return Err(failed(&format!("loading {}", path.display())));
        }
        Ok(Self {
            ctx,
            threads: i32::try_from(config.threads.max(1)).unwrap_or(1),
        })
    }

    /// A new decoding state.
    ///
    /// # Errors
    /// [`EngineError::Inference`] when whisper.cpp cannot allocate it.
    pub fn state(&self) -> Result<MultiState<'_>, EngineError> {
        // SAFETY: ctx is a live context.
        let ptr = unsafe { sys::whisper_init_state(self.ctx) };
        if ptr.is_null() {
            return Err(failed("creating a state"));
        }
        Ok(MultiState {
            ptr,
            model: self,
            last_call_tokens: 0,
        })
    }

    /// The vocabulary size (the length of each state's logits).
    pub fn n_vocab(&self) -> usize {
        // SAFETY: ctx is a live context.
        usize::try_from(unsafe { sys::whisper_n_vocab(self.ctx) }).unwrap_or(0)
    }

    /// The task prompt of an English transcription without timestamps.
    pub fn english_prompt(&self) -> Vec<i32> {
        // SAFETY: ctx is a live context; the language name is a C string literal.
        unsafe {
            let en = sys::whisper_lang_id(c"en".as_ptr());
            let mut prompt = vec![sys::whisper_token_sot(self.ctx)];
            if sys::whisper_is_multilingual(self.ctx) != 0 {
                prompt.push(sys::whisper_token_lang(self.ctx, en));
                prompt.push(sys::whisper_token_transcribe(self.ctx));
            }
            prompt.push(sys::whisper_token_not(self.ctx));
            prompt
        }
    }

    /// One decoder step of `states.len()` states in one call: `tokens[i]` on `states[i]` at
    /// position `n_pasts[i]`; each state's logits then hold that token's.
    ///
    /// # Errors
    /// [`EngineError::InvalidOptions`] for mismatched lengths or more than [`MAX_STATES`];
    /// [`EngineError::Inference`] when whisper.cpp fails the step.
    pub fn decode_multi(
        &self,
        states: &mut [&mut MultiState<'_>],
        tokens: &[i32],
        n_pasts: &[i32],
    ) -> Result<(), EngineError> {
        let n = states.len();
        if n == 0 || n > MAX_STATES || tokens.len() != n || n_pasts.len() != n {
            return Err(EngineError::InvalidOptions(format!(
                "{n} states (1 to {MAX_STATES}), {} tokens, {} positions",
                tokens.len(),
                n_pasts.len()
            )));
        }
        if states.iter().any(|s| !std::ptr::eq(s.model, self)) {
            return Err(EngineError::InvalidOptions(
                "a state of another model".into(),
            ));
        }
        let mut ptrs: Vec<*mut sys::whisper_state> = states.iter().map(|s| s.ptr).collect();
        // SAFETY: the states are live, distinct (&mut borrows) and of this context; the
        // arrays have n elements.
        let rc = unsafe {
            sys::whisper_decode_multi_with_states(
                self.ctx,
                ptrs.as_mut_ptr(),
                tokens.as_ptr(),
                n_pasts.as_ptr(),
                n as i32,
                self.threads,
            )
        };
        if rc != 0 {
            return Err(failed(&format!("multi-state decoder step ({rc})")));
        }
        for state in states.iter_mut() {
            state.last_call_tokens = 1;
        }
        Ok(())
    }
}

impl Drop for MultiModel {
    fn drop(&mut self) {
        // SAFETY: every state borrows the model, so none outlives this.
        unsafe { sys::whisper_free(self.ctx) }
    }
}

/// One stream's decoding state of a [`MultiModel`].
pub struct MultiState<'m> {
    ptr: *mut sys::whisper_state,
    model: &'m MultiModel,
    /// Tokens of the last decoder call (0 before the first): its logits are the last's.
    last_call_tokens: usize,
}

// SAFETY: a state is whisper.cpp heap data used through `&mut self` only.
unsafe impl Send for MultiState<'_> {}

impl MultiState<'_> {
    /// The mel spectrogram and encoder of `samples` (16 kHz mono, at most one 30 s window
    /// is encoded).
    ///
    /// # Errors
    /// [`EngineError::Inference`] when whisper.cpp fails.
    pub fn encode(&mut self, samples: &[f32]) -> Result<(), EngineError> {
        let m = self.model;
        // SAFETY: live context and state; samples outlive the call.
        unsafe {
            if sys::whisper_pcm_to_mel_with_state(
                m.ctx,
                self.ptr,
                samples.as_ptr(),
                i32::try_from(samples.len()).unwrap_or(i32::MAX),
                m.threads,
            ) != 0
            {
                return Err(failed("mel spectrogram"));
            }
            if sys::whisper_encode_with_state(m.ctx, self.ptr, 0, m.threads) != 0 {
                return Err(failed("encoder"));
            }
        }
        Ok(())
    }

    /// A decoder call on this state alone (whisper.cpp's `whisper_decode_with_state`):
    /// `tokens` from position `n_past`; the logits are the last token's.
    ///
    /// # Errors
    /// [`EngineError::Inference`] when whisper.cpp fails.
    pub fn decode(&mut self, tokens: &[i32], n_past: i32) -> Result<(), EngineError> {
        let m = self.model;
        // SAFETY: live context and state; tokens outlive the call.
        let rc = unsafe {
            sys::whisper_decode_with_state(
                m.ctx,
                self.ptr,
                tokens.as_ptr(),
                i32::try_from(tokens.len()).unwrap_or(i32::MAX),
                n_past,
                m.threads,
            )
        };
        if rc != 0 {
            return Err(failed("decoder"));
        }
        self.last_call_tokens = tokens.len();
        Ok(())
    }

    /// The logits of the last decoded token (the model's vocabulary size; empty before the
    /// first decode).
    pub fn logits(&self) -> &[f32] {
        if self.last_call_tokens == 0 {
            return &[];
        }
        let n_vocab = self.model.n_vocab();
        // SAFETY: after a decoder call of k tokens whisper.cpp's state holds k * n_vocab
        // logits, the last token's at the end.
        unsafe {
            let p = sys::whisper_get_logits_from_state(self.ptr);
            if p.is_null() {
                return &[];
            }
            std::slice::from_raw_parts(p.add((self.last_call_tokens - 1) * n_vocab), n_vocab)
        }
    }
}

impl Drop for MultiState<'_> {
    fn drop(&mut self) {
        // SAFETY: the state is live and freed once.
        unsafe { sys::whisper_free_state(self.ptr) }
    }
}

/// The index of the largest value (greedy decoding's choice).
pub fn argmax(logits: &[f32]) -> i32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    i32::try_from(best).unwrap_or(0)
}

/// Decoder-step timings of `streams` streams, in milliseconds per step of all of them (the
/// mean over the steps): [`time_streams`].
#[derive(Clone, Debug, PartialEq)]
pub struct StreamTimings {
    /// Streams stepped.
    pub streams: usize,
    /// Each stream's one-token decoder call in turn, on one thread.
    pub one_at_a_time_ms: f64,
    /// Each stream's calls on its own thread at once (as the server's workers decode).
    pub threads_ms: f64,
    /// One multi-state call for all of them ([`MultiModel::decode_multi`]).
    pub multi_ms: f64,
}

/// Times `tokens` decoder steps (1 to [`crate::bench::MAX_STEPS`]) of each count of streams in `counts` (each at most
/// [`MAX_STATES`]) three ways ([`StreamTimings`]). Every stream has `window` encoded and the
/// English task prompt decoded; then each step decodes one ordinary text token per stream
/// (a step's cost does not depend on which token it is), from the same position each way.
///
/// # Errors
/// [`EngineError::InvalidOptions`] for a count of 0 or above [`MAX_STATES`];
/// [`EngineError::Inference`] when whisper.cpp fails.
pub fn time_streams(
    model: &MultiModel,
    window: &[f32],
    counts: &[usize],
    tokens: usize,
) -> Result<Vec<StreamTimings>, EngineError> {
    if let Some(bad) = counts.iter().find(|&&n| n == 0 || n > MAX_STATES) {
        return Err(EngineError::InvalidOptions(format!(
            "{bad} streams (1 to {MAX_STATES})"
        )));
    }
    let prompt = model.english_prompt();
    let start = prompt.len() as i32;
    let text_token = crate::bench::TEXT_TOKEN;
    let steps = tokens.clamp(1, crate::bench::MAX_STEPS);
    let most = counts.iter().copied().max().unwrap_or(0);
    let mut states = (0..most)
        .map(|_| model.state())
        .collect::<Result<Vec<_>, _>>()?;
    for state in &mut states {
        state.encode(window)?;
        state.decode(&prompt, 0)?;
    }
    let per_step = |elapsed: std::time::Duration| elapsed.as_secs_f64() * 1e3 / steps as f64;
    let mut out = Vec::new();
    for &n in counts {
        let group = &mut states[..n];

        let t = std::time::Instant::now();
        for k in 0..steps as i32 {
            for state in group.iter_mut() {
                state.decode(&[text_token], start + k)?;
            }
        }
        let one_at_a_time_ms = per_step(t.elapsed());

        let t = std::time::Instant::now();
        std::thread::scope(|scope| {
            let handles: Vec<_> = group
                .iter_mut()
                .map(|state| {
                    scope.spawn(move || {
                        (0..steps as i32).try_for_each(|k| state.decode(&[text_token], start + k))
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(failed("a decoding thread panicked")))
            })
        })?;
        let threads_ms = per_step(t.elapsed());

        let tokens_n = vec![text_token; n];
        // The first multi-state call of a state makes its scheduler: not timed.
        let mut refs: Vec<&mut MultiState<'_>> = group.iter_mut().collect();
        model.decode_multi(&mut refs, &tokens_n, &vec![start; n])?;
        let t = std::time::Instant::now();
        for k in 0..steps as i32 {
            let mut refs: Vec<&mut MultiState<'_>> = group.iter_mut().collect();
            model.decode_multi(&mut refs, &tokens_n, &vec![start + k; n])?;
        }
        let multi_ms = per_step(t.elapsed());

        out.push(StreamTimings {
            streams: n,
            one_at_a_time_ms,
            threads_ms,
            multi_ms,
        });
    }
    Ok(out)
}
