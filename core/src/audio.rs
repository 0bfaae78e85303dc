//! Audio constants of the pipeline and conversions between samples and time.
//!
//! Everything downstream of ingest is 16 kHz mono `f32` in `[-1, 1]`: the rate Whisper's
//! feature extractor expects (openai/whisper `audio.py`: `SAMPLE_RATE = 16000`).

/// Sample rate of every buffer after ingest, in Hz (Whisper's only input rate).
pub const SAMPLE_RATE: u32 = 16_000;

/// Whisper's window: 30 s of audio (openai/whisper `audio.py`: `CHUNK_LENGTH = 30`).
pub const WINDOW_SECONDS: u32 = 30;

/// Samples in one Whisper window (30 s at 16 kHz).
pub const WINDOW_SAMPLES: usize = (SAMPLE_RATE * WINDOW_SECONDS) as usize;

/// Converts a sample count at [`SAMPLE_RATE`] to seconds.
pub fn samples_to_seconds(samples: usize) -> f64 {
    samples as f64 / f64::from(SAMPLE_RATE)
}

/// Converts seconds to a sample count at [`SAMPLE_RATE`], rounding to the nearest sample
/// and clamping negative times to zero.
pub fn seconds_to_samples(seconds: f64) -> usize {
    (seconds.max(0.0) * f64::from(SAMPLE_RATE)).round() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        assert_eq!(seconds_to_samples(1.5), 24_000);
        assert_eq!(samples_to_seconds(8_000), 0.5);
        assert_eq!(seconds_to_samples(-1.0), 0);
        assert_eq!(WINDOW_SAMPLES, 480_000);
    }
}
