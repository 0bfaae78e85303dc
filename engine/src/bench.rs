//! Kernel timings of a loaded model: the encoder on one 30 s window and the decoder per
//! token, measured on whisper.cpp's own entry points (`whisper_encode_with_state`,
//! `whisper_decode_with_state`) with a fresh state, so they do not depend on what the weights
//! make the decoder say. This is how models with random weights (`transcribe models synth`)
//! are timed: their text is garbage, their arithmetic is the real model's.

use std::time::Instant;

use transcribe_core::EngineError;

use crate::WhisperModel;

/// Samples in whisper's 30 s window at 16 kHz.
pub const WINDOW_SAMPLES: usize = 30 * 16_000;

/// An ordinary text token for timing decoder steps: " " in both of whisper's vocabularies
/// (the cost of a step does not depend on which token it is).
pub const TEXT_TOKEN: i32 = 220;

/// The most decoder steps a timing takes.
pub const MAX_STEPS: usize = 200;

/// What [`time_kernels`] measured; times in milliseconds, one entry per run or token.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelTimings {
    /// Log-mel spectrogram of the 30 s window, per run.
    pub mel_ms: Vec<f64>,
    /// Encoder over the whole window (`audio_ctx` 1500), per run.
    pub encode_ms: Vec<f64>,
    /// One decoder step of one token with the KV cache, per token (after the first).
    pub decode_token_ms: Vec<f64>,
}

/// The median of `v` (0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Inference(format!("{what}: {e}"))
}

/// Times `runs` mel + encoder passes over `window` (padded or cut to 30 s) and `tokens`
/// single-token decoder steps after the start-of-transcript token, on a new state of `model`
/// with the model's thread count.
///
/// # Errors
/// [`EngineError::Inference`] when whisper.cpp fails a call.
pub fn time_kernels(
    model: &WhisperModel,
    window: &[f32],
    runs: usize,
    tokens: usize,
) -> Result<KernelTimings, EngineError> {
    let threads = model.config().threads.max(1);
    let ctx = model.context();
    let mut state = ctx
        .create_state()
        .map_err(|e| failed("creating a state", e))?;
    let mut audio = window[..window.len().min(WINDOW_SAMPLES)].to_vec();
    audio.resize(WINDOW_SAMPLES, 0.0);
    let mut t = KernelTimings::default();
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        state
            .pcm_to_mel(&audio, threads)
            .map_err(|e| failed("mel", e))?;
        t.mel_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        state.encode(0, threads).map_err(|e| failed("encoder", e))?;
        t.encode_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    // Decoder steps: the start-of-transcript token, then one ordinary text token at a time
    // (the cost of a step does not depend on which token it is).
    let sot = ctx.token_sot();
    let steps = tokens.clamp(1, MAX_STEPS);
    for n_past in 0..=steps {
        let token = if n_past == 0 { sot } else { TEXT_TOKEN };
        let start = Instant::now();
        state
            .decode(&[token], n_past, threads)
            .map_err(|e| failed("decoder", e))?;
        if n_past > 0 {
            t.decode_token_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
