//! [`Converter`]: streaming downmix and resampling of interleaved `f32` audio at any rate and
//! channel count to 16 kHz mono ([`SAMPLE_RATE`]).
//!
//! Design (what the tests pin down):
//! - Channels are averaged first, so only one channel is resampled.
//! - Mono input is queued and handed to rubato in blocks of exactly the size it asks for, so
//!   the output depends only on the signal, never on how the caller chunked it: pushing one
//!   sample at a time gives bit-identical output to pushing the whole file.
//! - The resampler's delay is trimmed at the start and its tail flushed by [`Converter::finish`],
//!   so output sample `k` is the input at time `k / 16000 s` and the output holds
//!   `round(input_frames * 16000 / input_rate)` samples.
//! - 16 kHz input is never filtered: mono passes through unchanged, multichannel is only averaged.

use std::fmt;

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, FixedAsync, FixedSync, Indexing, Resampler, SincInterpolationParameters,
    SincInterpolationType, WindowFunction,
};
use transcribe_core::SAMPLE_RATE;

use crate::AudioError;

/// Lowest input rate [`Converter::new`] accepts, in Hz. Below it there is no speech band left.
pub const MIN_INPUT_RATE: u32 = 1_000;

/// Highest input rate [`Converter::new`] accepts, in Hz (768 kHz: the highest rate of common
/// PCM interfaces). Above it the rate is certainly a mistake.
pub const MAX_INPUT_RATE: u32 = 768_000;

/// Points on the shorter side of one FFT block. rubato derives the anti-aliasing cutoff from
/// the block length (`rubato::calculate_cutoff`, tuned so the stop band starts at the lower
/// Nyquist frequency): 256 points with a Blackman-Harris² window put it near 0.95 of Nyquist
/// (7.6 kHz when downsampling to 16 kHz), at a delay of half a block (about 8 ms).
const MIN_FFT_BLOCK: usize = 256;

/// Longest FFT block (output side) we accept before falling back to the sinc resampler.
/// Rates whose ratio to 16 kHz reduces badly (e.g. 47 999 Hz: blocks of a whole second) would
/// otherwise buffer seconds of audio; 4096 samples is 256 ms.
const MAX_FFT_BLOCK_OUT: usize = 4_096;

/// Sinc length of the fallback resampler; 256 is rubato's recommended starting point and gives
/// the same ~0.95 cutoff as the FFT path.
const SINC_LEN: usize = 256;

/// Oversampling of the fallback's sinc table (rubato suggests 128 and up; more is more exact).
const SINC_OVERSAMPLING: usize = 256;

/// Input frames per call of the fallback resampler.
const SINC_CHUNK: usize = 1_024;

/// Streaming converter from interleaved `f32` at any rate and channel count to 16 kHz mono.
///
/// Push audio as it arrives, in chunks of any size (even partial frames), and call
/// [`finish`](Converter::finish) at end of stream to flush the resampler's tail. The
/// concatenated outputs are the same, sample for sample, whatever the chunking. Output lags
/// input by up to one resampler block (tens of milliseconds) until `finish`.
///
/// # Example
/// ```
/// use transcribe_audio::Converter;
/// # fn main() -> Result<(), transcribe_audio::AudioError> {
/// let mut conv = Converter::new(48_000, 2)?;
/// let stereo = vec![0.0f32; 2 * 48_000]; // one second
/// let mut out = conv.push(&stereo[..1_000]);
/// out.extend(conv.push(&stereo[1_000..]));
/// out.extend(conv.finish());
/// assert_eq!(out.len(), 16_000);
/// # Ok(())
/// # }
/// ```
pub struct Converter {
    input_rate: u32,
    channels: u16,
    /// Samples of a frame that is not complete yet (fewer than `channels`).
    partial: Vec<f32>,
    /// Complete input frames seen so far.
    frames_in: u64,
    /// `None` at 16 kHz: downmix only.
    resampling: Option<Box<Resampling>>,
}

/// The resampling half of a [`Converter`].
struct Resampling {
    inner: Box<dyn Resampler<f32>>,
    /// Mono input not yet handed to `inner`.
    pending: Vec<f32>,
    /// Output buffer of `inner.output_frames_max()` frames.
    scratch: Vec<f32>,
    /// Leading output frames still to drop (the resampler's delay).
    to_trim: usize,
    /// Output frames handed to the caller so far.
    emitted: u64,
}

impl fmt::Debug for Converter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Converter")
            .field("input_rate", &self.input_rate)
            .field("channels", &self.channels)
            .field("frames_in", &self.frames_in)
            .field("resampling", &self.resampling.is_some())
            .finish_non_exhaustive()
    }
}

impl Converter {
    /// A converter for interleaved input at `input_rate` Hz with `channels` channels.
    ///
    /// # Errors
    /// [`AudioError::InvalidStream`] when `channels` is 0 or `input_rate` is outside
    /// [`MIN_INPUT_RATE`]`..=`[`MAX_INPUT_RATE`].
    pub fn new(input_rate: u32, channels: u16) -> Result<Self, AudioError> {
        let invalid = |reason| AudioError::InvalidStream {
            sample_rate: input_rate,
            channels,
            reason,
        };
        if channels == 0 {
            return Err(invalid("there must be at least one channel"));
        }
        if !(MIN_INPUT_RATE..=MAX_INPUT_RATE).contains(&input_rate) {
            return Err(invalid("the sample rate must be between 1 kHz and 768 kHz"));
        }
        let resampling = if input_rate == SAMPLE_RATE {
            None
        } else {
            let inner = make_resampler(input_rate)
                .map_err(|_| invalid("the resampler rejected this rate"))?;
            Some(Box::new(Resampling {
                pending: Vec::with_capacity(2 * inner.input_frames_max()),
                scratch: vec![0.0; inner.output_frames_max()],
                to_trim: inner.output_delay(),
                emitted: 0,
                inner,
            }))
        };
        Ok(Self {
            input_rate,
            channels,
            partial: Vec::with_capacity(usize::from(channels)),
            frames_in: 0,
            resampling,
        })
    }

    /// The input sample rate in Hz.
    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    /// The input channel count.
    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Converts the next chunk of interleaved input and returns the 16 kHz mono samples that
    /// are ready. The chunk need not hold whole frames: a trailing partial frame is kept for
    /// the next call.
    pub fn push(&mut self, interleaved: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        self.push_into(interleaved, &mut out);
        out
    }

    /// Like [`push`](Converter::push), but appends the output to `out` (no allocation once
    /// `out` has grown to its working size).
    pub fn push_into(&mut self, interleaved: &[f32], out: &mut Vec<f32>) {
        let channels = usize::from(self.channels);
        match self.resampling.as_deref_mut() {
            None => {
                let from = out.len();
                self.frames_in += downmix_into(&mut self.partial, channels, interleaved, out);
                sanitize(&mut out[from..]);
            }
            Some(r) => {
                let from = r.pending.len();
                self.frames_in +=
                    downmix_into(&mut self.partial, channels, interleaved, &mut r.pending);
                sanitize(&mut r.pending[from..]);
                r.run_full_blocks(out);
            }
        }
    }

    /// Ends the stream: flushes the resampler and returns the last samples, so that all
    /// outputs together hold `round(frames * 16000 / input_rate)` samples. An incomplete
    /// trailing frame (fewer samples than channels) is dropped.
    pub fn finish(self) -> Vec<f32> {
        let mut out = Vec::new();
        let Some(mut r) = self.resampling else {
            return out;
        };
        let expected = expected_output_len(self.frames_in, self.input_rate);
        r.run_full_blocks(&mut out);
        let rest = r.pending.len();
        if rest > 0 {
            r.process(rest, Some(rest), &mut out);
            r.pending.clear();
        }
        // Pump silence through until the delayed tail of the input has come out. Each round
        // yields at least one frame; the bound only guards against a resampler that would not.
        let mut rounds = r.inner.output_delay() + r.scratch.len() + 2;
        while r.emitted < expected && rounds > 0 {
            r.process(0, Some(0), &mut out);
            rounds -= 1;
        }
        let excess = r.emitted.saturating_sub(expected);
        let keep = out
            .len()
            .saturating_sub(usize::try_from(excess).unwrap_or(usize::MAX));
        out.truncate(keep);
        out
    }
}

impl Resampling {
    /// Resamples every whole block queued in `pending`.
    fn run_full_blocks(&mut self, out: &mut Vec<f32>) {
        let mut start = 0;
        loop {
            let need = self.inner.input_frames_next();
            if need == 0 || self.pending.len() - start < need {
                break;
            }
            let block = start..start + need;
            start += self.process_range(block, None, out);
        }
        self.pending.drain(..start);
    }

    /// Resamples `pending[..len]`, telling rubato it is a partial block of `partial` frames
    /// when given. Returns the input frames consumed.
    fn process(&mut self, len: usize, partial: Option<usize>, out: &mut Vec<f32>) -> usize {
        self.process_range(0..len, partial, out)
    }

    fn process_range(
        &mut self,
        range: std::ops::Range<usize>,
        partial: Option<usize>,
        out: &mut Vec<f32>,
    ) -> usize {
        let frames = range.len();
        let out_frames = self.scratch.len();
        let input = InterleavedSlice::new(&self.pending[range], 1, frames);
        let output = InterleavedSlice::new_mut(&mut self.scratch, 1, out_frames);
        let indexing = partial.map(|n| Indexing::new().partial_len(n));
        let result = match (input, output) {
            (Ok(input), Ok(mut output)) => self
                .inner
                .process_into_buffer(&input, &mut output, indexing.as_ref())
                .ok(),
            _ => None,
        };
        // Buffers are sized from rubato's own `input_frames_next`/`output_frames_max`, so this
        // cannot fail; if it ever did, drop the block rather than panic in a session task.
        debug_assert!(result.is_some(), "rubato rejected our buffer sizes");
        let Some((consumed, produced)) = result else {
            return frames.max(1);
        };
        let produced = &self.scratch[..produced.min(out_frames)];
        let skip = self.to_trim.min(produced.len());
        self.to_trim -= skip;
        out.extend_from_slice(&produced[skip..]);
        self.emitted += (produced.len() - skip) as u64;
        // With `partial`, rubato reports a whole block consumed; we consumed `frames`.
        if partial.is_some() { frames } else { consumed }
    }
}

/// Builds the mono resampler from `input_rate` to 16 kHz: rubato's synchronous FFT resampler
/// when the rate ratio reduces to a block of reasonable length, its sinc resampler otherwise.
fn make_resampler(
    input_rate: u32,
) -> Result<Box<dyn Resampler<f32>>, rubato::ResamplerConstructionError> {
    let rate_in = input_rate as usize;
    let rate_out = SAMPLE_RATE as usize;
    let g = gcd(rate_in, rate_out);
    let (unit_in, unit_out) = (rate_in / g, rate_out / g);
    let mut units = MIN_FFT_BLOCK.div_ceil(unit_in.min(unit_out));
    // rubato centres its filter on input sample `block_in / 2` (rounded down) and reports a
    // delay of `block_out / 2` output samples (rounded down); both are exact only when both
    // block sizes are even. Otherwise output would come up to 0.7 samples early.
    if units % 2 == 1 && (unit_in % 2 == 1 || unit_out % 2 == 1) {
        units += 1;
    }
    let (block_in, block_out) = (units * unit_in, units * unit_out);
    if block_out <= MAX_FFT_BLOCK_OUT {
        let fft = rubato::Fft::<f32>::new_custom(
            rate_in,
            rate_out,
            block_in,
            1,
            1,
            WindowFunction::BlackmanHarris2,
            FixedSync::Both,
        )?;
        Ok(Box::new(fft))
    } else {
        let params = SincInterpolationParameters::new(SINC_LEN, WindowFunction::BlackmanHarris2)
            .oversampling_factor(SINC_OVERSAMPLING)
            .interpolation(SincInterpolationType::Cubic);
        let sinc = Async::<f32>::new_sinc(
            rate_out as f64 / rate_in as f64,
            1.0,
            &params,
            SINC_CHUNK,
            1,
            FixedAsync::Input,
        )?;
        Ok(Box::new(sinc))
    }
}

/// `round(frames * 16000 / input_rate)`, halves rounded up.
fn expected_output_len(frames: u64, input_rate: u32) -> u64 {
    let rate = u128::from(input_rate);
    let n = (u128::from(frames) * u128::from(SAMPLE_RATE) + rate / 2) / rate;
    u64::try_from(n).unwrap_or(u64::MAX)
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Averages the channels of each complete frame of `input` into `out`, carrying an incomplete
/// frame over in `partial`. Returns the number of frames written.
fn downmix_into(partial: &mut Vec<f32>, channels: usize, input: &[f32], out: &mut Vec<f32>) -> u64 {
    if channels == 1 {
        out.extend_from_slice(input);
        return input.len() as u64;
    }
    let mut input = input;
    let mut frames = 0;
    if !partial.is_empty() {
        let take = (channels - partial.len()).min(input.len());
        partial.extend_from_slice(&input[..take]);
        input = &input[take..];
        if partial.len() < channels {
            return 0;
        }
        out.push(average(partial));
        partial.clear();
        frames += 1;
    }
    let whole = input.chunks_exact(channels);
    partial.extend_from_slice(whole.remainder());
    out.reserve(whole.len());
    for frame in whole {
        out.push(average(frame));
        frames += 1;
    }
    frames
}

/// Largest magnitude the converter passes on or hands to the resampler: 120 dB above full
/// scale, far beyond real audio and far below where the f32 sums of an FFT block overflow
/// (`f32::MAX` is about 3.4e38).
const MAX_RESAMPLE_MAGNITUDE: f32 = 1.0e6;

/// Keeps the converter's output finite and rubato from panicking: its FFT resampler panics on
/// NaN and on the infinities that huge values overflow to (found by the `audio_decode` fuzz
/// harness), and averaging channels near `f32::MAX` overflows to infinity even without
/// resampling (found by the `ingest` fuzz target). NaN becomes 0, everything else is clamped
/// to [`MAX_RESAMPLE_MAGNITUDE`], which leaves real audio bit-identical. Callers that must
/// reject such input (raw client PCM, float files) check before converting.
fn sanitize(samples: &mut [f32]) {
    for s in samples {
        *s = if s.is_nan() {
            0.0
        } else {
            s.clamp(-MAX_RESAMPLE_MAGNITUDE, MAX_RESAMPLE_MAGNITUDE)
        };
    }
}

fn average(frame: &[f32]) -> f32 {
    frame.iter().sum::<f32>() / frame.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Rates the tests sweep: common ones, one odd one, and one (47 999 Hz) that takes the
    /// sinc fallback.
    const RATES: [u32; 8] = [
        8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 47_999,
    ];

    fn tone(rate: u32, freq: f64, seconds: f64, amp: f64) -> Vec<f32> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as f32)
            .collect()
    }

    fn convert_whole(rate: u32, channels: u16, input: &[f32]) -> Result<Vec<f32>, AudioError> {
        let mut c = Converter::new(rate, channels)?;
        let mut out = c.push(input);
        out.extend(c.finish());
        Ok(out)
    }

    /// Power of `freq` in `x` (Hann-windowed Goertzel), normalised so a full-scale sine is 0.25.
    fn goertzel_power(x: &[f32], rate: u32, freq: f64) -> f64 {
        let n = x.len();
        let w = 2.0 * PI * freq / f64::from(rate);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for (i, &v) in x.iter().enumerate() {
            let hann = 0.5 - 0.5 * (2.0 * PI * i as f64 / n as f64).cos();
            let s = f64::from(v) * hann + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        let p = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        // Hann's coherent gain is 0.5.
        p / (n as f64 * 0.5 / 2.0).powi(2) / 4.0
    }

    fn db(ratio: f64) -> f64 {
        10.0 * ratio.max(1e-30).log10()
    }

    /// Deterministic pseudo-random numbers (no rand dependency).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
        fn signal(&mut self, n: usize) -> Vec<f32> {
            (0..n)
                .map(|_| (self.next() % 20_001) as f32 / 10_000.0 - 1.0)
                .collect()
        }
    }

    #[test]
    fn rejects_bad_stream_parameters() {
        assert!(matches!(
            Converter::new(16_000, 0),
            Err(AudioError::InvalidStream { channels: 0, .. })
        ));
        for rate in [0, 999, 768_001] {
            let err = Converter::new(rate, 1).err();
            assert!(
                matches!(err, Some(AudioError::InvalidStream { sample_rate, .. }) if sample_rate == rate)
            );
        }
        assert!(Converter::new(MIN_INPUT_RATE, 1).is_ok());
        assert!(Converter::new(MAX_INPUT_RATE, 8).is_ok());
    }

    #[test]
    fn identity_at_16k_mono() -> TestResult {
        let input = Lcg(1).signal(12_345);
        let mut c = Converter::new(16_000, 1)?;
        let mut out = Vec::new();
        for chunk in input.chunks(1_000) {
            c.push_into(chunk, &mut out);
        }
        out.extend(c.finish());
        assert_eq!(out, input);
        Ok(())
    }

    #[test]
    fn downmix_averages_channels() -> TestResult {
        // L = 1, R = -1 cancels; L = R passes; 0.5 and 0 average to 0.25.
        let stereo = [1.0, -1.0, 0.5, 0.5, 0.5, 0.0, -0.25, -0.75];
        assert_eq!(convert_whole(16_000, 2, &stereo)?, [0.0, 0.5, 0.25, -0.5]);
        let three = [0.3, 0.3, 0.3, 1.0, -1.0, 0.0];
        let out = convert_whole(16_000, 3, &three)?;
        assert!(
            (out[0] - 0.3).abs() < 1e-7 && out[1].abs() < 1e-7,
            "{out:?}"
        );
        Ok(())
    }

    #[test]
    fn partial_frames_carry_over_and_trailing_half_frame_is_dropped() -> TestResult {
        let mut c = Converter::new(16_000, 2)?;
        let mut out = c.push(&[1.0]);
        assert!(out.is_empty());
        out.extend(c.push(&[0.0, 0.5]));
        out.extend(c.push(&[0.5, 0.25, 0.25, 0.7]));
        out.extend(c.finish());
        assert_eq!(out, [0.5, 0.5, 0.25]);
        Ok(())
    }

    #[test]
    fn output_length_is_rounded_ratio() -> TestResult {
        for rate in RATES {
            for n in [0usize, 1, 2, 7, 100, 999, 4_410, 44_100, 100_003] {
                let input = Lcg(n as u64).signal(n);
                let out = convert_whole(rate, 1, &input)?;
                let want = (n as f64 * 16_000.0 / f64::from(rate)).round() as usize;
                assert_eq!(out.len(), want, "rate {rate}, {n} input frames");
            }
        }
        Ok(())
    }

    #[test]
    fn chunking_does_not_change_output() -> TestResult {
        for rate in RATES {
            for channels in [1u16, 2] {
                let input = Lcg(u64::from(rate)).signal(usize::from(channels) * 30_011);
                let whole = convert_whole(rate, channels, &input)?;
                let mut rng = Lcg(7);
                for chunking in ["ones", "100", "4096", "random"] {
                    if chunking == "ones" && rate != 44_100 {
                        continue; // slow in debug builds; one rate is enough
                    }
                    let mut c = Converter::new(rate, channels)?;
                    let mut out = Vec::new();
                    let mut rest = &input[..];
                    while !rest.is_empty() {
                        let size = match chunking {
                            "ones" => 1,
                            "100" => 100,
                            "4096" => 4_096,
                            _ => 1 + (rng.next() % 3_000) as usize,
                        }
                        .min(rest.len());
                        c.push_into(&rest[..size], &mut out);
                        rest = &rest[size..];
                    }
                    out.extend(c.finish());
                    assert!(
                        out == whole,
                        "rate {rate}, {channels} ch, chunks {chunking}: outputs differ"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn click_comes_out_at_the_same_time() -> TestResult {
        for rate in RATES {
            let mut input = vec![0.0f32; rate as usize / 2];
            let at = rate as usize / 4; // 0.25 s
            input[at] = 1.0;
            let out = convert_whole(rate, 1, &input)?;
            let peak = out
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .map(|(i, _)| i)
                .unwrap_or(0);
            eprintln!("rate {rate}: click at output sample {peak} (want 4000)");
            assert!(peak.abs_diff(4_000) <= 1, "rate {rate}: click at {peak}");
        }
        Ok(())
    }

    #[test]
    fn tone_keeps_its_frequency_and_level() -> TestResult {
        for rate in [8_000, 22_050, 44_100, 48_000, 47_999] {
            let out = convert_whole(rate, 1, &tone(rate, 1_000.0, 2.0, 0.5))?;
            // Zero crossings over the middle second: 2 per period.
            let mid = &out[8_000..24_000];
            let crossings = mid
                .windows(2)
                .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
                .count();
            assert!(crossings.abs_diff(2_000) <= 2, "rate {rate}: {crossings}");
            // Level within 0.1 dB (0.5 amplitude: power 0.0625).
            let p = goertzel_power(mid, 16_000, 1_000.0);
            assert!(
                (db(p / 0.0625)).abs() < 0.1,
                "rate {rate}: {} dB",
                db(p / 0.0625)
            );
        }
        Ok(())
    }

    #[test]
    fn passband_edge_is_kept() -> TestResult {
        // Cutoff near 0.95 of 8 kHz: 7 kHz must come through nearly untouched.
        for rate in [44_100, 48_000, 47_999] {
            let out = convert_whole(rate, 1, &tone(rate, 7_000.0, 1.0, 0.5))?;
            let p = goertzel_power(&out[2_000..14_000], 16_000, 7_000.0);
            eprintln!("rate {rate}: 7 kHz passes at {:.2} dB", db(p / 0.0625));
            assert!(db(p / 0.0625) > -1.0, "rate {rate}: {} dB", db(p / 0.0625));
        }
        Ok(())
    }

    #[test]
    fn no_aliasing_from_above_nyquist() -> TestResult {
        // 9 kHz would fold to 7 kHz; it must be attenuated by more than 40 dB.
        for rate in [44_100, 48_000, 47_999] {
            let input = tone(rate, 9_000.0, 1.0, 0.5);
            let out = convert_whole(rate, 1, &input)?;
            let body = &out[1_000..15_000];
            let energy =
                body.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / body.len() as f64;
            let input_energy = 0.125; // 0.5^2 / 2
            let atten = db(energy / input_energy);
            eprintln!("rate {rate}: 9 kHz comes out at {atten:.1} dB");
            assert!(atten < -40.0, "rate {rate}: 9 kHz at {atten:.1} dB");
        }
        Ok(())
    }

    #[test]
    fn transition_band_tone_leaves_passband_clean() -> TestResult {
        // 7.9 kHz sits in the transition band: it may be attenuated, but nothing may appear
        // below 7 kHz.
        for rate in [44_100, 48_000] {
            let out = convert_whole(rate, 1, &tone(rate, 7_900.0, 1.0, 0.5))?;
            let body = &out[2_000..14_000];
            let worst = (1..140)
                .map(|k| goertzel_power(body, 16_000, f64::from(k) * 50.0))
                .fold(0.0f64, f64::max);
            eprintln!(
                "rate {rate}: 7.9 kHz tone, worst bin below 7 kHz {:.1} dB",
                db(worst / 0.0625)
            );
            assert!(
                db(worst / 0.0625) < -60.0,
                "rate {rate}: {:.1} dB",
                db(worst / 0.0625)
            );
        }
        Ok(())
    }

    #[test]
    fn downsampled_stereo_is_mean_of_channels() -> TestResult {
        let left = tone(44_100, 440.0, 1.0, 0.6);
        let right = tone(44_100, 660.0, 1.0, 0.2);
        let stereo: Vec<f32> = left
            .iter()
            .zip(&right)
            .flat_map(|(l, r)| [*l, *r])
            .collect();
        let mono: Vec<f32> = left
            .iter()
            .zip(&right)
            .map(|(l, r)| (l + r) / 2.0)
            .collect();
        let a = convert_whole(44_100, 2, &stereo)?;
        let b = convert_whole(44_100, 1, &mono)?;
        assert_eq!(a.len(), b.len());
        let max_diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(max_diff < 1e-5, "{max_diff}");
        Ok(())
    }

    /// Found by the `audio_decode` fuzz harness: NaN, infinities and values near `f32::MAX`
    /// made rubato panic ("Imaginary part of first value was non-zero"); by the `ingest` fuzz
    /// target: two channels near `f32::MAX` averaged to infinity at 16 kHz. Now NaN becomes 0
    /// and the rest is clamped, at every rate, and the output is finite.
    #[test]
    fn non_finite_and_huge_input_never_panics() -> TestResult {
        for rate in RATES {
            for (channels, bad) in [
                (1, f32::NAN),
                (1, f32::INFINITY),
                (2, f32::MAX),
                (1, -f32::MAX),
            ] {
                let mut conv = Converter::new(rate, channels)?;
                let mut input = tone(rate, 440.0, 0.5, 0.5);
                for s in input.iter_mut().step_by(97) {
                    *s = bad;
                }
                let mut out = conv.push(&input);
                out.extend(conv.finish());
                assert!(out.iter().all(|s| s.is_finite()), "{rate} Hz, {bad}");
                assert!(!out.is_empty());
            }
        }
        Ok(())
    }
}
