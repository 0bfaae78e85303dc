//! Raw PCM bytes (as gRPC clients send them) to `f32` samples in [-1, 1].

use std::fmt;

use crate::AudioError;

/// Encoding of raw, headerless PCM samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SampleFormat {
    /// Signed 16-bit little-endian integers (the common "LINEAR16").
    S16Le,
    /// 32-bit IEEE float little-endian, nominally in [-1, 1].
    F32Le,
}

impl SampleFormat {
    /// Bytes in one sample of one channel.
    pub const fn bytes_per_sample(self) -> usize {
        match self {
            SampleFormat::S16Le => 2,
            SampleFormat::F32Le => 4,
        }
    }
}

impl fmt::Display for SampleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SampleFormat::S16Le => "s16le",
            SampleFormat::F32Le => "f32le",
        })
    }
}

/// Scale of a signed 16-bit sample: `i16::MIN` maps to exactly -1.0.
const I16_SCALE: f32 = 1.0 / 32_768.0;

/// Converts raw interleaved PCM bytes to `f32` samples (channels stay interleaved).
///
/// # Errors
/// [`AudioError::PcmLength`] when `bytes` is not a whole number of samples;
/// [`AudioError::NonFiniteSample`] when an [`SampleFormat::F32Le`] sample is NaN or infinite.
pub fn pcm_to_f32(bytes: &[u8], format: SampleFormat) -> Result<Vec<f32>, AudioError> {
    let width = format.bytes_per_sample();
    if !bytes.len().is_multiple_of(width) {
        return Err(AudioError::PcmLength {
            format,
            len: bytes.len(),
        });
    }
    match format {
        SampleFormat::S16Le => Ok(bytes
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) * I16_SCALE)
            .collect()),
        SampleFormat::F32Le => {
            let samples: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            match samples.iter().position(|s| !s.is_finite()) {
                Some(index) => Err(AudioError::NonFiniteSample { format, index }),
                None => Ok(samples),
            }
        }
    }
}

/// [`pcm_to_f32`] for [`SampleFormat::S16Le`].
///
/// # Errors
/// [`AudioError::PcmLength`] for an odd byte count.
pub fn pcm_s16le_to_f32(bytes: &[u8]) -> Result<Vec<f32>, AudioError> {
    pcm_to_f32(bytes, SampleFormat::S16Le)
}

/// [`pcm_to_f32`] for [`SampleFormat::F32Le`].
///
/// # Errors
/// [`AudioError::PcmLength`] when the byte count is not a multiple of 4;
/// [`AudioError::NonFiniteSample`] for NaN or infinity.
pub fn pcm_f32le_to_f32(bytes: &[u8]) -> Result<Vec<f32>, AudioError> {
    pcm_to_f32(bytes, SampleFormat::F32Le)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s16le_values_and_scale() -> Result<(), AudioError> {
        let bytes: Vec<u8> = [0i16, 1, -1, i16::MAX, i16::MIN, 16_384]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let got = pcm_s16le_to_f32(&bytes)?;
        let want = [
            0.0,
            1.0 / 32_768.0,
            -1.0 / 32_768.0,
            32_767.0 / 32_768.0,
            -1.0,
            0.5,
        ];
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn f32le_round_trips() -> Result<(), AudioError> {
        let want = [0.0f32, 0.25, -1.0, 1.0, 1e-7];
        let bytes: Vec<u8> = want.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(pcm_to_f32(&bytes, SampleFormat::F32Le)?, want);
        assert_eq!(pcm_f32le_to_f32(&bytes)?, want);
        Ok(())
    }

    #[test]
    fn empty_input_is_empty_output() -> Result<(), AudioError> {
        assert!(pcm_s16le_to_f32(&[])?.is_empty());
        assert!(pcm_f32le_to_f32(&[])?.is_empty());
        Ok(())
    }

    #[test]
    fn odd_byte_count_is_an_error_that_says_so() {
        let err = pcm_s16le_to_f32(&[1, 2, 3]).err();
        assert!(matches!(
            err,
            Some(AudioError::PcmLength {
                format: SampleFormat::S16Le,
                len: 3
            })
        ));
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("3 bytes") && msg.contains("2 byte"), "{msg}");
        assert!(matches!(
            pcm_f32le_to_f32(&[0; 6]),
            Err(AudioError::PcmLength { len: 6, .. })
        ));
    }

    #[test]
    fn non_finite_float_is_rejected() {
        let bytes: Vec<u8> = [0.5f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(matches!(
            pcm_f32le_to_f32(&bytes),
            Err(AudioError::NonFiniteSample { index: 1, .. })
        ));
    }

    #[test]
    fn bytes_per_sample() {
        assert_eq!(SampleFormat::S16Le.bytes_per_sample(), 2);
        assert_eq!(SampleFormat::F32Le.bytes_per_sample(), 4);
    }
}
