//! Whisper's mel filter bank, computed (not shipped): librosa's slaney-normalised
//! `librosa.filters.mel(sr=16000, n_fft=400, n_mels=n)`, which is also what openai-whisper
//! ships as `whisper/assets/mel_filters.npz` and whisper.cpp stores in every ggml file.
//!
//! The arithmetic follows librosa's (f64, with its f32 rounding points): the 80- and
//! 128-band tables match openai-whisper's `mel_filters.npz` bit for bit (checked on every
//! value once; the tests keep a sample and the sums).

/// Sample rate Whisper's front end runs at (openai/whisper audio.py `SAMPLE_RATE`).
pub const MEL_SAMPLE_RATE: u32 = 16_000;
/// FFT size (openai/whisper audio.py `N_FFT`: 25 ms at 16 kHz).
pub const N_FFT: usize = 400;
/// Frequency bins per frame: `N_FFT / 2 + 1`.
pub const N_FREQ: usize = N_FFT / 2 + 1;

/// Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above
/// (librosa `hz_to_mel(htk=False)`).
const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn logstep() -> f64 {
    6.4f64.ln() / 27.0
}

fn hz_to_mel(f: f64) -> f64 {
    if f >= MIN_LOG_HZ {
        MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() / logstep()
    } else {
        f / F_SP
    }
}

fn mel_to_hz(m: f64) -> f64 {
    if m >= MIN_LOG_MEL {
        MIN_LOG_HZ * (logstep() * (m - MIN_LOG_MEL)).exp()
    } else {
        F_SP * m
    }
}

/// `n` points evenly spaced from `start` to `stop` inclusive, as numpy's `linspace`.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (stop - start) / (n - 1) as f64;
    let mut v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
    v[n - 1] = stop;
    v
}

/// The slaney-normalised mel filter bank, `n_mels` rows of [`N_FREQ`] weights, row-major,
/// for 16 kHz audio and a 400-point FFT from 0 Hz to the Nyquist frequency.
///
/// Whisper uses `n_mels` = 80, large-v3 128.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    let sr = f64::from(MEL_SAMPLE_RATE);
    // numpy.fft.rfftfreq(n, d): k / (n * d).
    let d = 1.0 / sr;
    let bin_hz = 1.0 / (N_FFT as f64 * d);
    let fft_freqs: Vec<f64> = (0..N_FREQ).map(|k| k as f64 * bin_hz).collect();
    let mel_f: Vec<f64> = linspace(hz_to_mel(0.0), hz_to_mel(sr / 2.0), n_mels + 2)
        .into_iter()
        .map(mel_to_hz)
        .collect();
    let mut out = vec![0f32; n_mels * N_FREQ];
    for i in 0..n_mels {
        let lower_width = mel_f[i + 1] - mel_f[i];
        let upper_width = mel_f[i + 2] - mel_f[i + 1];
        let enorm = 2.0 / (mel_f[i + 2] - mel_f[i]);
        for (k, &f) in fft_freqs.iter().enumerate() {
            let lower = -(mel_f[i] - f) / lower_width;
            let upper = (mel_f[i + 2] - f) / upper_width;
            // librosa stores the triangle into an f32 array, then scales it in place.
            let tri = 0f64.max(lower.min(upper)) as f32;
            out[i * N_FREQ + k] = (f64::from(tri) * enorm) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of openai-whisper's `mel_filters.npz` (release 20250625), row, column, value.
    const MEL_80: &[(usize, usize, f32)] = &[
        (0, 1, 0.024_862_595),
        (1, 1, 0.001_990_822),
        (1, 2, 0.022_871_772),
        (10, 10, 0.019_908_218),
        (10, 11, 0.004_954_375),
        (40, 42, 0.005_411_104_8),
        (40, 43, 0.014_735_566),
        (40, 44, 0.006_518_19),
        (79, 186, 0.000_366_741_67),
        (79, 192, 0.003_164_711_9),
        (79, 199, 0.000_448_759),
    ];
    const MEL_128: &[(usize, usize, f32)] = &[
        (0, 1, 0.012_373_987),
        (1, 1, 0.030_392_565),
        (10, 6, 0.011_289_184),
        (10, 7, 0.001_084_802),
        (40, 24, 0.040_376_365),
        (127, 191, 0.000_475_695_1),
        (127, 196, 0.004_457_121),
        (127, 199, 0.001_114_280_2),
    ];
    /// Sums of the whole shipped tables (computed in f64 over the f32 values).
    const SUM_80: f64 = 1.999_024_092_387_117;
    const SUM_128: f64 = 3.190_985_540_940_346_3;

    fn check(n_mels: usize, known: &[(usize, usize, f32)], sum: f64) {
        let m = mel_filters(n_mels);
        assert_eq!(m.len(), n_mels * N_FREQ);
        for &(r, c, v) in known {
            let got = m[r * N_FREQ + c];
            assert_eq!(
                got.to_bits(),
                v.to_bits(),
                "mel{n_mels}[{r}][{c}] = {got}, expected {v}"
            );
        }
        let s: f64 = m.iter().map(|&x| f64::from(x)).sum();
        assert!((s - sum).abs() < 1e-6, "sum {s} vs {sum}");
        // Zero outside each triangle: row 0 only touches bin 1.
        assert_eq!(m[0], 0.0);
        assert_eq!(m[2], 0.0);
        assert!(m.iter().all(|&x| x >= 0.0));
    }

    #[test]
    fn matches_whisper_80() {
        check(80, MEL_80, SUM_80);
    }

    #[test]
    fn matches_whisper_128() {
        check(128, MEL_128, SUM_128);
    }

    #[test]
    fn slaney_scale_is_continuous_at_1khz() {
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((mel_to_hz(15.0) - 1000.0).abs() < 1e-9);
        assert!((mel_to_hz(hz_to_mel(6000.0)) - 6000.0).abs() < 1e-9);
    }
}
