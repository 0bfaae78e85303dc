//! Voice activity detection and endpointing over 16 kHz samples.
//!
//! A frame-based energy + spectral detector with an adaptive noise floor and a hangover:
//! cheap (one 512-point FFT per 20 ms), deterministic and driven only by sample counts.
//!
//! Per 20 ms frame ([`FRAME_SAMPLES`]) it computes
//! - the frame energy in dBFS,
//! - the noise floor: the minimum frame energy over the last [`FLOOR_WINDOW_FRAMES`] frames
//!   (minimum statistics; it follows a rising noise level within that window and a falling
//!   one at once),
//! - the fraction of the energy inside the telephone band ([`BAND_LOW_HZ`]..[`BAND_HIGH_HZ`])
//!   and the spectral flatness inside it (geometric over arithmetic mean of the power
//!   spectrum: about 0.5 for white or pink noise, far lower for voiced speech, whose energy
//!   sits in harmonics and formants).
//!
//! A frame is *speech* when its energy is [`VadConfig::snr_db`] above the floor and above
//! [`VadConfig::min_energy_dbfs`], **and** it looks like speech: flatness between
//! [`MIN_FLATNESS`] (tones) and [`MAX_FLATNESS`] (noise), and at least [`MIN_BAND_FRACTION`]
//! of the energy in the speech band (hum). The floor alone rejects stationary noise; the
//! spectral tests reject noise, beeps and hum while the floor is still catching up.
//! An utterance starts after [`VadConfig::min_speech_samples`] of consecutive speech frames
//! (reported [`VadConfig::pre_roll_samples`] earlier than its first speech frame) and ends
//! after [`VadConfig::end_silence_samples`] without a speech frame (reported
//! [`VadConfig::post_roll_samples`] after its last speech frame). Positions are absolute
//! sample indices since the first pushed sample; chunking does not change the result.
//!
//! # Example
//! ```
//! use transcribe_core::vad::{Vad, VadConfig, VadEvent};
//! let mut vad = Vad::new(VadConfig::default())?;
//! let events = vad.push(&vec![0.0; 16_000]);
//! assert!(events.is_empty() && !vad.is_speaking());
//! # Ok::<(), transcribe_core::ConfigError>(())
//! ```

use std::collections::VecDeque;

use crate::audio::SAMPLE_RATE;

/// Frame hop: 20 ms at 16 kHz (WebRTC's VAD also works on 10/20/30 ms frames; 20 ms is
/// the encoder frame of Whisper too: 2 mel hops of 10 ms, openai/whisper `audio.py`).
pub const FRAME_SAMPLES: usize = 320;

/// FFT length: the last 32 ms of audio (the frame plus 12 ms of the previous one), a power
/// of two for the radix-2 FFT; 31.25 Hz per bin at 16 kHz.
const FFT_SIZE: usize = 512;

/// Lower edge of the speech band in Hz (ITU-T G.712 telephone band, 300-3400 Hz).
pub const BAND_LOW_HZ: f32 = 300.0;

/// Upper edge of the speech band in Hz (ITU-T G.712 telephone band, 300-3400 Hz).
pub const BAND_HIGH_HZ: f32 = 3400.0;

/// Lowest frequency counted in the total energy (drops DC and mains hum below 60 Hz).
const TOTAL_LOW_HZ: f32 = 60.0;

/// Minimum share of the frame's energy inside the speech band for a speech frame: rejects
/// rumble and mains hum. Deliberately low: male voices put most of their energy below
/// 300 Hz (F0 and low F1), and over the `../shared/eval` clips a bound of 0.1 lost 10% of
/// the speech frames while 0.02 loses 2%. (White noise has about 0.39 there.)
pub const MIN_BAND_FRACTION: f32 = 0.02;

/// Maximum spectral flatness inside the speech band for a speech frame (the larger of the
/// plain and the tilt-compensated flatness, see `Spectrum::band_features`). White and pink
/// noise never went below 0.41 in 30 s of each; 83% of loud frames of the English
/// `../shared/eval` clips are below 0.35 (median 0.08).
pub const MAX_FLATNESS: f32 = 0.35;

/// Minimum spectral flatness for a speech frame: a pure tone (a beep, a dial tone) measures
/// below 1e-5, while 99.5% of loud frames of the English `../shared/eval` clips are above
/// 8e-4 (voiced speech has many harmonics and noisy consonants).
pub const MIN_FLATNESS: f32 = 1e-4;

/// Noise floor window: the floor is the minimum frame energy of the last 3 s (150 frames),
/// long enough to always contain a pause in running speech (minimum statistics, Martin 2001).
pub const FLOOR_WINDOW_FRAMES: usize = 150;

/// Default trailing silence that ends an utterance: 500 ms (docs/DESIGN.md, "Streaming policy").
pub const DEFAULT_END_SILENCE_SAMPLES: usize = 8_000;

/// Default audio kept before the first speech frame: 300 ms (docs/DESIGN.md "Streaming policy": 200-300 ms;
/// Whisper transcribes a word's onset better with some lead-in).
pub const DEFAULT_PRE_ROLL_SAMPLES: usize = 4_800;

/// Default audio kept after the last speech frame: 200 ms (trailing consonants and decay
/// are quieter than the detector's threshold).
pub const DEFAULT_POST_ROLL_SAMPLES: usize = 3_200;

/// Default run of speech frames that starts an utterance: 80 ms (4 frames), long enough to
/// skip clicks, short enough not to lose a short word (its start is backdated anyway).
pub const DEFAULT_MIN_SPEECH_SAMPLES: usize = 1_280;

/// Default margin of a speech frame over the noise floor: 10 dB.
pub const DEFAULT_SNR_DB: f32 = 10.0;

/// Default absolute minimum energy of a speech frame: -60 dBFS (below that is the dither
/// and hiss of a quiet room; 16-bit audio's own floor is about -98 dBFS).
pub const DEFAULT_MIN_ENERGY_DBFS: f32 = -60.0;

/// How many frames of speech/non-speech decisions are kept for
/// [`Vad::speech_samples_between`]: 60 s, twice Whisper's 30 s window.
const DECISION_HISTORY_FRAMES: usize = 3_000;

/// Energy added before taking logarithms (about -120 dBFS), so digital silence is finite.
const ENERGY_EPSILON: f32 = 1e-12;

/// Why a configuration was rejected. Fix the value named by `field`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A numeric setting is outside its allowed range.
    #[error("{field} = {value} is out of range [{min}, {max}]")]
    OutOfRange {
        /// The setting's field name.
        field: &'static str,
        /// The rejected value.
        value: f64,
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// Two settings contradict each other.
    #[error("{field}: {reason}")]
    Inconsistent {
        /// The setting to change.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks `lo <= value <= hi`, naming `field` otherwise.
pub(crate) fn check_range(
    field: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
) -> Result<(), ConfigError> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            value,
            min: lo,
            max: hi,
        })
    }
}

/// VAD settings; durations are sample counts at 16 kHz.
#[derive(Clone, Debug, PartialEq)]
pub struct VadConfig {
    /// Non-speech that ends an utterance (hangover). Default 500 ms.
    pub end_silence_samples: usize,
    /// Audio reported before the first speech frame. Default 300 ms.
    pub pre_roll_samples: usize,
    /// Audio reported after the last speech frame; at most `end_silence_samples`.
    /// Default 200 ms.
    pub post_roll_samples: usize,
    /// Consecutive speech needed to start an utterance. Default 80 ms.
    pub min_speech_samples: usize,
    /// Margin over the noise floor, in dB. Default 10 dB; lower is more sensitive.
    pub snr_db: f32,
    /// Absolute minimum frame energy for speech, in dBFS. Default -60 dBFS.
    pub min_energy_dbfs: f32,
}

impl Default for VadConfig {
    fn default() -> Self {
        Self {
            end_silence_samples: DEFAULT_END_SILENCE_SAMPLES,
            pre_roll_samples: DEFAULT_PRE_ROLL_SAMPLES,
            post_roll_samples: DEFAULT_POST_ROLL_SAMPLES,
            min_speech_samples: DEFAULT_MIN_SPEECH_SAMPLES,
            snr_db: DEFAULT_SNR_DB,
            min_energy_dbfs: DEFAULT_MIN_ENERGY_DBFS,
        }
    }
}

impl VadConfig {
    /// Sets the silence that ends an utterance, bringing the post-roll down to it when it
    /// was longer (the post-roll is at most the end silence).
    pub fn set_end_silence(&mut self, samples: usize) {
        self.end_silence_samples = samples;
        self.post_roll_samples = self.post_roll_samples.min(samples);
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad field: end silence outside 20 ms..10 s,
    /// pre-roll above 1 s, post-roll above the end silence, minimum speech outside
    /// 20 ms..1 s, SNR outside 0..40 dB, minimum energy outside -100..0 dBFS.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let rate = f64::from(SAMPLE_RATE);
        check_range(
            "end_silence_samples",
            self.end_silence_samples as f64,
            FRAME_SAMPLES as f64,
            10.0 * rate,
        )?;
        check_range("pre_roll_samples", self.pre_roll_samples as f64, 0.0, rate)?;
        check_range(
            "post_roll_samples",
            self.post_roll_samples as f64,
            0.0,
            self.end_silence_samples as f64,
        )?;
        check_range(
            "min_speech_samples",
            self.min_speech_samples as f64,
            FRAME_SAMPLES as f64,
            rate,
        )?;
        check_range("snr_db", f64::from(self.snr_db), 0.0, 40.0)?;
        check_range(
            "min_energy_dbfs",
            f64::from(self.min_energy_dbfs),
            -100.0,
            0.0,
        )?;
        Ok(())
    }
}

/// A change of speech state, at an absolute sample position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech started; `sample` is backdated by the pre-roll (never before the previous
    /// utterance's end nor before 0).
    SpeechStart {
        /// Absolute position of the utterance's first sample.
        sample: u64,
    },
    /// Speech ended; `sample` is the last speech frame's end plus the post-roll (never
    /// after the audio pushed so far). Reported once the end silence has passed.
    SpeechEnd {
        /// Absolute position one past the utterance's last sample.
        sample: u64,
    },
}

/// What one frame looked like (for diagnostics and tests).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrameFeatures {
    /// Frame energy in dBFS (mean square; a full-scale sine is -3 dBFS).
    pub energy_db: f32,
    /// Noise floor in dBFS at this frame.
    pub floor_db: f32,
    /// Share of the energy inside the speech band.
    pub band_fraction: f32,
    /// Spectral flatness inside the speech band, in `[0, 1]`.
    pub flatness: f32,
    /// The decision.
    pub speech: bool,
}

/// The streaming voice activity detector. Feed it with [`Vad::push`].
#[derive(Clone, Debug)]
pub struct Vad {
    config: VadConfig,
    spectrum: Spectrum,
    /// The last `FFT_SIZE` samples (oldest first).
    history: Vec<f32>,
    /// Samples of the current, incomplete frame.
    pending: Vec<f32>,
    /// Frames analysed so far.
    frames: u64,
    /// Recent frame energies (dB) for the floor.
    energies: VecDeque<f32>,
    /// Consecutive speech frames so far.
    speech_run: u64,
    speaking: bool,
    /// Non-speech samples since the last speech frame while speaking.
    silence_run: usize,
    /// End (absolute sample) of the last speech frame.
    last_speech_end: u64,
    /// End (absolute sample) of the previous utterance.
    last_utterance_end: u64,
    /// Speech decisions of the last frames; `decisions[i]` is frame `decisions_base + i`.
    decisions: VecDeque<bool>,
    decisions_base: u64,
    last_features: Option<FrameFeatures>,
}

impl Vad {
    /// A detector with `config`.
    ///
    /// # Errors
    /// [`ConfigError`] when `config` fails [`VadConfig::validate`].
    pub fn new(config: VadConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            spectrum: Spectrum::new(),
            history: vec![0.0; FFT_SIZE],
            pending: Vec::with_capacity(FRAME_SAMPLES),
            frames: 0,
            energies: VecDeque::with_capacity(FLOOR_WINDOW_FRAMES + 1),
            speech_run: 0,
            speaking: false,
            silence_run: 0,
            last_speech_end: 0,
            last_utterance_end: 0,
            decisions: VecDeque::with_capacity(DECISION_HISTORY_FRAMES + 1),
            decisions_base: 0,
            last_features: None,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &VadConfig {
        &self.config
    }

    /// Samples pushed so far (the absolute position of the next sample).
    pub fn position(&self) -> u64 {
        self.frames * FRAME_SAMPLES as u64 + self.pending.len() as u64
    }

    /// Whether an utterance is open (speech started and not yet ended).
    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// Features of the last complete frame, if any.
    pub fn last_features(&self) -> Option<FrameFeatures> {
        self.last_features
    }

    /// Feeds samples (16 kHz mono) and returns the state changes they caused, in order.
    /// Any chunking of the same audio gives the same events.
    pub fn push(&mut self, samples: &[f32]) -> Vec<VadEvent> {
        let mut events = Vec::new();
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (FRAME_SAMPLES - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == FRAME_SAMPLES {
                let frame = std::mem::take(&mut self.pending);
                if let Some(event) = self.process_frame(&frame) {
                    events.push(event);
                }
                self.pending = frame;
                self.pending.clear();
            }
        }
        events
    }

    /// Ends an open utterance at the end of the stream: returns its `SpeechEnd` (last speech
    /// frame plus post-roll, within the audio pushed), or `None` when none is open.
    pub fn finish(&mut self) -> Option<VadEvent> {
        if !self.speaking {
            return None;
        }
        let end = (self.last_speech_end + self.config.post_roll_samples as u64)
            .min(self.position())
            .max(self.last_speech_end);
        Some(self.close(end))
    }

    /// Ends an open utterance now (a client's "finalize"): returns its `SpeechEnd` at the
    /// current position, or `None` when none is open. Speech that goes on needs a new onset.
    pub fn end_speech(&mut self) -> Option<VadEvent> {
        if !self.speaking {
            return None;
        }
        let end = self.position();
        Some(self.close(end))
    }

    /// Samples classified as speech between absolute positions `start` and `end`, counted
    /// in whole frames (a frame counts when its start is in `[start, end)`). Frames older
    /// than 60 s are forgotten and count as non-speech.
    pub fn speech_samples_between(&self, start: u64, end: u64) -> u64 {
        let frame = FRAME_SAMPLES as u64;
        let first = start.div_ceil(frame).max(self.decisions_base);
        let last = end.div_ceil(frame).min(self.frames); // exclusive
        if last <= first {
            return 0;
        }
        let skip = (first - self.decisions_base) as usize;
        let take = (last - first) as usize;
        let count = self
            .decisions
            .iter()
            .skip(skip)
            .take(take)
            .filter(|&&s| s)
            .count();
        count as u64 * frame
    }

    fn close(&mut self, end: u64) -> VadEvent {
        self.speaking = false;
        self.speech_run = 0;
        self.silence_run = 0;
        self.last_utterance_end = end;
        VadEvent::SpeechEnd { sample: end }
    }

    fn process_frame(&mut self, frame: &[f32]) -> Option<VadEvent> {
        self.history.copy_within(FRAME_SAMPLES.., 0);
        self.history[FFT_SIZE - FRAME_SAMPLES..].copy_from_slice(frame);
        let frame_start = self.frames * FRAME_SAMPLES as u64;
        let frame_end = frame_start + FRAME_SAMPLES as u64;
        self.frames += 1;

        let energy = frame.iter().map(|x| x * x).sum::<f32>() / FRAME_SAMPLES as f32;
        let energy_db = 10.0 * (energy + ENERGY_EPSILON).log10();
        self.energies.push_back(energy_db);
        if self.energies.len() > FLOOR_WINDOW_FRAMES {
            self.energies.pop_front();
        }
        let floor_db = self.energies.iter().copied().fold(f32::INFINITY, f32::min);

        let loud =
            energy_db >= floor_db + self.config.snr_db && energy_db >= self.config.min_energy_dbfs;
        let (band_fraction, flatness) = if loud {
            self.spectrum.band_features(&self.history)
        } else {
            (0.0, 1.0)
        };
        let speech = loud
            && band_fraction >= MIN_BAND_FRACTION
            && (MIN_FLATNESS..=MAX_FLATNESS).contains(&flatness);
        self.last_features = Some(FrameFeatures {
            energy_db,
            floor_db,
            band_fraction,
            flatness,
            speech,
        });

        self.decisions.push_back(speech);
        if self.decisions.len() > DECISION_HISTORY_FRAMES {
            self.decisions.pop_front();
            self.decisions_base += 1;
        }

        if speech {
            self.speech_run += 1;
            self.silence_run = 0;
            self.last_speech_end = frame_end;
        } else {
            self.speech_run = 0;
        }

        let frame_len = FRAME_SAMPLES as u64;
        if !self.speaking {
            let needed = (self.config.min_speech_samples as u64).div_ceil(frame_len);
            if speech && self.speech_run >= needed {
                let first_speech = frame_end - self.speech_run * frame_len;
                let start = first_speech
                    .saturating_sub(self.config.pre_roll_samples as u64)
                    .max(self.last_utterance_end);
                self.speaking = true;
                self.silence_run = 0;
                return Some(VadEvent::SpeechStart { sample: start });
            }
            return None;
        }
        if !speech {
            self.silence_run += FRAME_SAMPLES;
            if self.silence_run >= self.config.end_silence_samples {
                let end =
                    (self.last_speech_end + self.config.post_roll_samples as u64).min(frame_end);
                return Some(self.close(end));
            }
        }
        None
    }
}

/// A 512-point radix-2 FFT with a Hann window, giving band energy features.
#[derive(Clone, Debug)]
struct Spectrum {
    window: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    bitrev: Vec<usize>,
    re: Vec<f32>,
    im: Vec<f32>,
    power: Vec<f32>,
}

impl Spectrum {
    fn new() -> Self {
        let n = FFT_SIZE;
        let tau = std::f64::consts::TAU;
        let window = (0..n)
            .map(|i| (0.5 - 0.5 * (tau * i as f64 / n as f64).cos()) as f32)
            .collect();
        let cos = (0..n / 2)
            .map(|k| (tau * k as f64 / n as f64).cos() as f32)
            .collect();
        let sin = (0..n / 2)
            .map(|k| (tau * k as f64 / n as f64).sin() as f32)
            .collect();
        let bits = n.trailing_zeros();
        let bitrev = (0..n)
            .map(|i| i.reverse_bits() >> (usize::BITS - bits))
            .collect();
        Self {
            window,
            cos,
            sin,
            bitrev,
            re: vec![0.0; n],
            im: vec![0.0; n],
            power: vec![0.0; n / 2 + 1],
        }
    }

    /// Power spectrum (bins `0..=n/2`) of the windowed `input` (`FFT_SIZE` samples).
    fn compute(&mut self, input: &[f32]) {
        let n = FFT_SIZE;
        for (i, &x) in input.iter().enumerate().take(n) {
            let j = self.bitrev[i];
            self.re[j] = x * self.window[i];
            self.im[j] = 0.0;
        }
        let mut len = 2;
        while len <= n {
            let half = len / 2;
            let stride = n / len;
            for start in (0..n).step_by(len) {
                for k in 0..half {
                    let (c, s) = (self.cos[k * stride], -self.sin[k * stride]);
                    let (a, b) = (start + k, start + k + half);
                    let tr = self.re[b] * c - self.im[b] * s;
                    let ti = self.re[b] * s + self.im[b] * c;
                    self.re[b] = self.re[a] - tr;
                    self.im[b] = self.im[a] - ti;
                    self.re[a] += tr;
                    self.im[a] += ti;
                }
            }
            len *= 2;
        }
        for (k, p) in self.power.iter_mut().enumerate() {
            *p = self.re[k] * self.re[k] + self.im[k] * self.im[k];
        }
    }

    /// (share of energy in the speech band, spectral flatness in the band) of `input`.
    ///
    /// The flatness is the larger of the plain one and the one after a +3 dB/octave tilt
    /// (power times frequency): white noise is flat in the first, pink noise in the second,
    /// so noise of any slope between them scores high in one; voiced speech is low in both.
    fn band_features(&mut self, input: &[f32]) -> (f32, f32) {
        self.compute(input);
        let hz_per_bin = SAMPLE_RATE as f32 / FFT_SIZE as f32;
        let bin = |hz: f32| ((hz / hz_per_bin).round() as usize).min(FFT_SIZE / 2);
        let (lo, hi, total_lo) = (bin(BAND_LOW_HZ), bin(BAND_HIGH_HZ), bin(TOTAL_LOW_HZ));
        let total: f32 = self.power[total_lo..].iter().sum();
        let band = &self.power[lo..=hi];
        let band_sum: f32 = band.iter().sum();
        if total <= 0.0 || band_sum <= 0.0 {
            return (0.0, 1.0);
        }
        let plain = flatness(band.iter().copied());
        let tilted = flatness(band.iter().enumerate().map(|(i, &p)| p * (lo + i) as f32));
        (band_sum / total, plain.max(tilted))
    }
}

/// The quietest run of `frames` consecutive [`FRAME_SAMPLES`]-long frames of
/// `samples[range]`, by their mean square, frames counted from `range.start` (a shorter last
/// frame counts too, and a range shorter than the run is one run); the first of equal ones.
/// `None` when the range is empty or outside `samples`. Where to cut speech when no pause is
/// near: a run of one frame also finds a consonant's closure inside a word, five (100 ms)
/// prefer the gap between words.
pub fn quietest_frames(
    samples: &[f32],
    range: std::ops::Range<usize>,
    frames: usize,
) -> Option<std::ops::Range<usize>> {
    let range = range.start..range.end.min(samples.len());
    let energy: Vec<f32> = samples
        .get(range.clone())?
        .chunks(FRAME_SAMPLES)
        .map(|f| f.iter().map(|x| x * x).sum::<f32>() / f.len() as f32)
        .collect();
    let run = frames.clamp(1, energy.len().max(1));
    let best = energy
        .windows(run)
        .map(|w| w.iter().sum::<f32>())
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)?;
    let from = range.start + best * FRAME_SAMPLES;
    Some(from..(from + run * FRAME_SAMPLES).min(range.end))
}

/// Spectral flatness (geometric over arithmetic mean) of non-negative `power` values, in
/// `[0, 1]`; 1 for an empty or all-zero input. Each value is floored at 10^-6 of the mean
/// (-60 dB) so that a few empty bins do not send it to 0.
fn flatness(power: impl Iterator<Item = f32> + Clone) -> f32 {
    let (n, sum) = power
        .clone()
        .fold((0usize, 0f32), |(n, s), p| (n + 1, s + p));
    if n == 0 || sum <= 0.0 {
        return 1.0;
    }
    let mean = sum / n as f32;
    let floor = mean * 1e-6;
    let mean_log = power.map(|p| (p + floor).ln()).sum::<f32>() / n as f32;
    (mean_log.exp() / (mean + floor)).clamp(0.0, 1.0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::f32::consts::TAU;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A small deterministic generator (SplitMix64) for test noise.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Self(seed)
        }
        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in [-1, 1).
        pub(crate) fn uniform(&mut self) -> f32 {
            (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    fn db_to_amp(db: f32) -> f32 {
        10f32.powf(db / 20.0)
    }

    fn rms(x: &[f32]) -> f32 {
        (x.iter().map(|v| v * v).sum::<f32>() / x.len().max(1) as f32).sqrt()
    }

    fn scale_to_rms(mut x: Vec<f32>, dbfs: f32) -> Vec<f32> {
        let g = db_to_amp(dbfs) / rms(&x).max(1e-12);
        x.iter_mut().for_each(|v| *v *= g);
        x
    }

    pub(crate) fn white_noise(seconds: f32, dbfs: f32, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let n = (seconds * SAMPLE_RATE as f32) as usize;
        scale_to_rms((0..n).map(|_| rng.uniform()).collect(), dbfs)
    }

    /// Pink noise by the Voss-McCartney method (16 octave rows updated at halving rates).
    pub(crate) fn pink_noise(seconds: f32, dbfs: f32, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let n = (seconds * SAMPLE_RATE as f32) as usize;
        let mut rows = [0f32; 16];
        let mut sum = 0.0;
        let out = (0..n)
            .map(|i| {
                let k = (i as u32 + 1).trailing_zeros() as usize;
                if k < rows.len() {
                    sum -= rows[k];
                    rows[k] = rng.uniform();
                    sum += rows[k];
                }
                sum + rng.uniform()
            })
            .collect();
        scale_to_rms(out, dbfs)
    }

    pub(crate) fn tone(seconds: f32, hz: f32, amp: f32) -> Vec<f32> {
        let n = (seconds * SAMPLE_RATE as f32) as usize;
        (0..n)
            .map(|i| amp * (TAU * hz * i as f32 / SAMPLE_RATE as f32).sin())
            .collect()
    }

    /// A speech-like burst: a harmonic series on a gliding F0 with two formant peaks,
    /// amplitude-modulated at a syllable rate of 4 Hz, RMS about `dbfs`.
    pub(crate) fn speech_like(seconds: f32, dbfs: f32, f0: f32) -> Vec<f32> {
        let n = (seconds * SAMPLE_RATE as f32) as usize;
        let sr = SAMPLE_RATE as f32;
        let mut phase = 0.0f32;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let t = i as f32 / sr;
            let f = f0 * (1.0 + 0.1 * (TAU * 0.7 * t).sin());
            phase += TAU * f / sr;
            if phase > TAU * 1000.0 {
                phase -= TAU * 1000.0;
            }
            let mut v = 0.0;
            let mut h = 1;
            while (h as f32) * f < 3800.0 {
                let hf = h as f32 * f;
                let formant = (-((hf - 600.0) / 250.0).powi(2)).exp()
                    + 0.6 * (-((hf - 1700.0) / 350.0).powi(2)).exp()
                    + 0.05;
                v += formant * (phase * h as f32).sin();
                h += 1;
            }
            // Syllables: 4 Hz envelope that never quite closes (0.15..1).
            let env = 0.15 + 0.85 * (0.5 - 0.5 * (TAU * 4.0 * t).cos());
            out.push(v * env);
        }
        scale_to_rms(out, dbfs)
    }

    fn run(vad: &mut Vad, audio: &[f32], chunk: usize) -> Vec<VadEvent> {
        let mut events = Vec::new();
        for c in audio.chunks(chunk.max(1)) {
            events.extend(vad.push(c));
        }
        events.extend(vad.finish());
        events
    }

    fn detect(audio: &[f32]) -> Result<Vec<VadEvent>, ConfigError> {
        let mut vad = Vad::new(VadConfig::default())?;
        Ok(run(&mut vad, audio, 1_600))
    }

    fn concat(parts: &[Vec<f32>]) -> Vec<f32> {
        parts.iter().flatten().copied().collect()
    }

    const SR: usize = SAMPLE_RATE as usize;

    #[test]
    fn silence_and_noise_are_not_speech() -> TestResult {
        let cases: Vec<(&str, Vec<f32>)> = vec![
            ("digital silence", vec![0.0; 10 * SR]),
            ("white -30 dBFS", white_noise(10.0, -30.0, 1)),
            ("pink -30 dBFS", pink_noise(10.0, -30.0, 2)),
            ("white -10 dBFS", white_noise(10.0, -10.0, 3)),
            ("pink -50 dBFS", pink_noise(10.0, -50.0, 4)),
            ("tone 1 kHz", tone(3.0, 1000.0, 0.5)),
            (
                "silence then a 440 Hz beep",
                concat(&[vec![0.0; SR], tone(2.0, 440.0, 0.3), vec![0.0; SR]]),
            ),
            (
                "silence then 50 Hz hum with harmonics",
                concat(&[
                    vec![0.0; SR],
                    tone(3.0, 50.0, 0.3)
                        .iter()
                        .zip(tone(3.0, 150.0, 0.1))
                        .zip(tone(3.0, 250.0, 0.05))
                        .map(|((a, b), c)| a + b + c)
                        .collect(),
                ]),
            ),
            (
                "silence then white noise",
                concat(&[vec![0.0; 2 * SR], white_noise(8.0, -30.0, 5)]),
            ),
            (
                "silence then pink noise",
                concat(&[vec![0.0; 2 * SR], pink_noise(8.0, -30.0, 6)]),
            ),
        ];
        for (name, audio) in cases {
            let events = detect(&audio)?;
            assert!(events.is_empty(), "{name}: {events:?}");
        }
        Ok(())
    }

    #[test]
    fn speech_like_bursts_are_detected_with_pre_and_post_roll() -> TestResult {
        // 1 s silence, 2 s speech, 1.5 s silence, 1 s speech, 1 s silence.
        let audio = concat(&[
            white_noise(1.0, -70.0, 7),
            speech_like(2.0, -25.0, 120.0),
            white_noise(1.5, -70.0, 8),
            speech_like(1.0, -25.0, 210.0),
            white_noise(1.0, -70.0, 9),
        ]);
        let events = detect(&audio)?;
        let s = |sec: f32| (sec * SR as f32) as u64;
        assert_eq!(events.len(), 4, "{events:?}");
        let near = |got: u64, want: u64, tol: u64| got.abs_diff(want) <= tol;
        let tol = s(0.1);
        match events[..] {
            [
                VadEvent::SpeechStart { sample: a },
                VadEvent::SpeechEnd { sample: b },
                VadEvent::SpeechStart { sample: c },
                VadEvent::SpeechEnd { sample: d },
            ] => {
                assert!(near(a, s(1.0 - 0.3), tol), "start {a}");
                assert!(near(b, s(3.0 + 0.2), tol), "end {b}");
                assert!(near(c, s(4.5 - 0.3), tol), "start {c}");
                assert!(near(d, s(5.5 + 0.2), tol), "end {d}");
            }
            _ => panic!("unexpected events {events:?}"),
        }
        Ok(())
    }

    #[test]
    fn speech_in_noise_is_detected() -> TestResult {
        let noise = pink_noise(6.0, -40.0, 10);
        let speech = concat(&[
            vec![0.0; 2 * SR],
            speech_like(2.0, -20.0, 150.0),
            vec![0.0; 2 * SR],
        ]);
        let audio: Vec<f32> = noise.iter().zip(&speech).map(|(a, b)| a + b).collect();
        let events = detect(&audio)?;
        assert_eq!(events.len(), 2, "{events:?}");
        Ok(())
    }

    #[test]
    fn chunk_size_does_not_change_events() -> TestResult {
        let audio = concat(&[
            white_noise(0.7, -60.0, 11),
            speech_like(1.3, -25.0, 130.0),
            white_noise(0.9, -60.0, 12),
            speech_like(0.6, -30.0, 180.0),
            white_noise(0.4, -60.0, 13),
        ]);
        let mut reference = Vad::new(VadConfig::default())?;
        let want = run(&mut reference, &audio, audio.len());
        assert!(!want.is_empty());
        for chunk in [1, 7, 160, 320, 333, 4_096] {
            let mut vad = Vad::new(VadConfig::default())?;
            assert_eq!(run(&mut vad, &audio, chunk), want, "chunk {chunk}");
        }
        Ok(())
    }

    #[test]
    fn utterance_ends_within_end_silence_of_speech_end() -> TestResult {
        let speech_end = 3 * SR;
        let audio = concat(&[
            vec![0.0; SR],
            speech_like(2.0, -25.0, 140.0),
            vec![0.0; 2 * SR],
        ]);
        let mut vad = Vad::new(VadConfig::default())?;
        let mut ended_at = None;
        for (i, chunk) in audio.chunks(160).enumerate() {
            if vad
                .push(chunk)
                .iter()
                .any(|e| matches!(e, VadEvent::SpeechEnd { .. }))
            {
                ended_at = Some((i + 1) * 160);
                break;
            }
        }
        let ended_at = ended_at.ok_or("no end")?;
        let latency = ended_at - speech_end;
        assert!(
            latency <= DEFAULT_END_SILENCE_SAMPLES + 2 * FRAME_SAMPLES,
            "latency {latency} samples"
        );
        Ok(())
    }

    #[test]
    fn finish_and_end_speech_close_an_open_utterance() -> TestResult {
        let mut vad = Vad::new(VadConfig::default())?;
        let events = vad.push(&speech_like(1.0, -25.0, 140.0));
        assert!(matches!(events[..], [VadEvent::SpeechStart { sample: 0 }]));
        assert!(vad.is_speaking());
        assert_eq!(
            vad.end_speech(),
            Some(VadEvent::SpeechEnd { sample: SR as u64 })
        );
        assert!(!vad.is_speaking() && vad.finish().is_none());
        // Still speaking: a new onset is needed, and it starts after the forced end.
        let events = vad.push(&speech_like(1.0, -25.0, 140.0));
        assert!(
            matches!(events[..], [VadEvent::SpeechStart { sample }] if sample >= SR as u64),
            "{events:?}"
        );
        assert!(
            matches!(vad.finish(), Some(VadEvent::SpeechEnd { sample }) if sample == 2 * SR as u64)
        );
        Ok(())
    }

    #[test]
    fn speech_samples_are_counted_by_frame() -> TestResult {
        let mut vad = Vad::new(VadConfig::default())?;
        let _ = vad.push(&concat(&[
            vec![0.0; SR],
            speech_like(1.0, -25.0, 140.0),
            vec![0.0; SR],
        ]));
        let speech = vad.speech_samples_between(0, 3 * SR as u64);
        assert!(
            speech > SR as u64 * 7 / 10 && speech <= SR as u64,
            "{speech}"
        );
        assert_eq!(vad.speech_samples_between(0, SR as u64), 0);
        assert_eq!(vad.speech_samples_between(2 * SR as u64, 3 * SR as u64), 0);
        Ok(())
    }

    #[test]
    fn config_is_validated() {
        let bad = VadConfig {
            post_roll_samples: 9_000,
            ..VadConfig::default()
        };
        assert!(matches!(
            Vad::new(bad),
            Err(ConfigError::OutOfRange {
                field: "post_roll_samples",
                ..
            })
        ));
        let bad = VadConfig {
            snr_db: f32::NAN,
            ..VadConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    // ---- Real audio (skipped when absent) ----

    pub(crate) fn workspace_root() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Reads a 16 kHz mono WAV as f32, or `None` when it is another format.
    pub(crate) fn read_wav_16k_mono(
        path: &std::path::Path,
    ) -> Result<Option<Vec<f32>>, Box<dyn std::error::Error>> {
        let mut reader = hound::WavReader::open(path)?;
        let spec = reader.spec();
        if spec.sample_rate != SAMPLE_RATE || spec.channels != 1 {
            return Ok(None);
        }
        let samples = match spec.sample_format {
            hound::SampleFormat::Float => reader.samples::<f32>().collect::<Result<Vec<_>, _>>()?,
            hound::SampleFormat::Int => {
                let scale = (1i64 << (spec.bits_per_sample - 1)) as f32;
                reader
                    .samples::<i32>()
                    .map(|s| s.map(|v| v as f32 / scale))
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(Some(samples))
    }

    #[test]
    fn fixture_signals_are_not_speech() -> TestResult {
        let dir = workspace_root().join("audio-fixtures/signals");
        if !dir.is_dir() {
            eprintln!("skipping: {} is absent", dir.display());
            return Ok(());
        }
        let mut checked = 0;
        for name in [
            "silence_10s.wav",
            "white_noise_10s.wav",
            "pink_noise_10s.wav",
            "tone_1khz_3s.wav",
        ] {
            let path = dir.join(name);
            let Some(audio) = path
                .is_file()
                .then(|| read_wav_16k_mono(&path))
                .transpose()?
                .flatten()
            else {
                eprintln!("skipping {name}: absent or not 16 kHz mono");
                continue;
            };
            let events = detect(&audio)?;
            assert!(events.is_empty(), "{name}: {events:?}");
            checked += 1;
        }
        eprintln!("checked {checked} fixture signals");
        Ok(())
    }

    #[test]
    fn fixture_pauses_give_three_utterances() -> TestResult {
        let dir = workspace_root().join("audio-fixtures/speech");
        let (wav, tsv) = (dir.join("pauses.wav"), dir.join("pauses.segments.tsv"));
        if !wav.is_file() || !tsv.is_file() {
            eprintln!("skipping: pauses fixture absent");
            return Ok(());
        }
        let audio = read_wav_16k_mono(&wav)?.ok_or("pauses.wav is not 16 kHz mono")?;
        let spans: Vec<(f64, f64)> = std::fs::read_to_string(&tsv)?
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
            })
            .collect();
        assert_eq!(spans.len(), 3, "{spans:?}");
        let events = detect(&audio)?;
        let sec = |s: u64| s as f64 / f64::from(SAMPLE_RATE);
        let utterances: Vec<(f64, f64)> = events
            .chunks(2)
            .filter_map(|p| match p {
                [
                    VadEvent::SpeechStart { sample: a },
                    VadEvent::SpeechEnd { sample: b },
                ] => Some((sec(*a), sec(*b))),
                _ => None,
            })
            .collect();
        assert_eq!(utterances.len(), 3, "{events:?}");
        for ((s, e), (us, ue)) in spans.iter().zip(&utterances) {
            assert!(us <= s && *us >= s - 0.5, "start {us} vs speech {s}");
            assert!(
                ue >= &(e - 0.1) && *ue <= e + 0.35,
                "end {ue} vs speech {e}"
            );
        }
        Ok(())
    }

    #[test]
    fn real_speech_is_detected_in_jfk() -> TestResult {
        let path = workspace_root().join("../shared/eval/wav16k/jfk.wav");
        if !path.is_file() {
            eprintln!("skipping: {} is absent", path.display());
            return Ok(());
        }
        let audio = read_wav_16k_mono(&path)?.ok_or("jfk.wav is not 16 kHz mono")?;
        let mut vad = Vad::new(VadConfig::default())?;
        let events = run(&mut vad, &audio, 1_000);
        let starts = events
            .iter()
            .filter(|e| matches!(e, VadEvent::SpeechStart { .. }))
            .count();
        let speech =
            vad.speech_samples_between(0, audio.len() as u64) as f64 / f64::from(SAMPLE_RATE);
        eprintln!("jfk: {starts} utterances, {speech:.2} s of speech frames: {events:?}");
        assert!(starts >= 1);
        assert!(speech > 4.0, "only {speech:.2} s of speech detected");
        Ok(())
    }

    #[test]
    fn every_eval_clip_has_speech() -> TestResult {
        let root = workspace_root().join("../shared/eval");
        let Ok(manifest) = std::fs::read_to_string(root.join("manifest.tsv")) else {
            eprintln!("skipping: {} is absent", root.display());
            return Ok(());
        };
        let mut worst = (f64::INFINITY, String::new());
        for line in manifest.lines().skip(1) {
            let Some(id) = line.split('\t').next() else {
                continue;
            };
            let path = root.join("wav16k").join(format!("{id}.wav"));
            let Some(audio) = read_wav_16k_mono(&path)? else {
                continue;
            };
            let events = detect(&audio)?;
            let mut covered = 0;
            let mut start = 0;
            for e in &events {
                match *e {
                    VadEvent::SpeechStart { sample } => start = sample,
                    VadEvent::SpeechEnd { sample } => covered += sample - start,
                }
            }
            let share = covered as f64 / audio.len() as f64;
            assert!(
                share >= 0.4,
                "{id}: only {share:.2} of the clip in utterances"
            );
            if share < worst.0 {
                worst = (share, id.to_string());
            }
        }
        eprintln!(
            "lowest share of a clip inside utterances: {:.2} ({})",
            worst.0, worst.1
        );
        Ok(())
    }

    #[test]
    fn quietest_frames_prefers_a_pause_to_a_short_closure() {
        // 1 s of a loud tone with a silent 20 ms "closure" at 0.3 s and a silent 100 ms
        // "pause" at 0.6 s; a half-loud frame at 0.8 s.
        let mut x: Vec<f32> = (0..16_000).map(|i| (i as f32 * 0.3).sin()).collect();
        let f = FRAME_SAMPLES;
        x[15 * f..16 * f].fill(0.0);
        x[30 * f..35 * f].fill(0.0);
        x[40 * f..41 * f].iter_mut().for_each(|v| *v *= 0.5);
        // One frame: the first silent frame, the closure.
        assert_eq!(quietest_frames(&x, 0..x.len(), 1), Some(15 * f..16 * f));
        // Five frames: the pause.
        assert_eq!(quietest_frames(&x, 0..x.len(), 5), Some(30 * f..35 * f));
        // Frames count from the range's start; a range shorter than the run is one run.
        assert_eq!(quietest_frames(&x, 40 * f..42 * f, 1), Some(40 * f..41 * f));
        assert_eq!(quietest_frames(&x, 40 * f..42 * f, 5), Some(40 * f..42 * f));
        // The end is clipped to the samples; nothing to search gives None.
        assert_eq!(quietest_frames(&x, 49 * f..60 * f, 1), Some(49 * f..50 * f));
        assert_eq!(quietest_frames(&x, 10..10, 1), None);
        assert_eq!(quietest_frames(&x, 20_000..30_000, 1), None);
    }
}
