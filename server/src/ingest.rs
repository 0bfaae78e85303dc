//! Per-stream audio ingest: validates the declared [`AudioFormat`] and turns each
//! `audio_content` chunk into 16 kHz mono samples (G.711 expansion, PCM to `f32`, downmix and
//! resampling with `transcribe_audio::Converter`, carry-over between chunks).
//!
//! Pure and synchronous: no I/O, no clock.

use std::time::Duration;

use transcribe_audio::{Converter, SampleFormat, g711, pcm_to_f32};
use transcribe_proto::v1::{AudioEncoding, AudioFormat};

use crate::error::RequestError;

/// Lowest sample rate accepted from clients (the API's documented range: 8-48 kHz).
pub const MIN_SAMPLE_RATE: i32 = 8_000;

/// Highest sample rate accepted from clients.
pub const MAX_SAMPLE_RATE: i32 = 48_000;

/// Most interleaved channels accepted (7.1 surround); they are averaged to mono.
pub const MAX_CHANNELS: i32 = 8;

/// Encodings StreamingRecognize accepts (headerless; container formats go to Recognize).
pub const STREAMING_ENCODINGS: [AudioEncoding; 4] = [
    AudioEncoding::Linear16,
    AudioEncoding::Float32,
    AudioEncoding::Mulaw,
    AudioEncoding::Alaw,
];

/// How the bytes of one sample are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sample {
    Pcm(SampleFormat),
    Mulaw,
    Alaw,
}

impl Sample {
    fn bytes(self) -> usize {
        match self {
            Sample::Pcm(format) => format.bytes_per_sample(),
            Sample::Mulaw | Sample::Alaw => 1,
        }
    }
}

/// A validated headerless audio format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFormat {
    sample: Sample,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Interleaved channels.
    pub channels: u16,
}

impl RawFormat {
    /// Validates `format` for a headerless stream. `field` is the path of the `AudioFormat`
    /// in the request, used in field violations.
    ///
    /// # Errors
    /// [`RequestError::InvalidArgument`] for a missing, container or unknown encoding, a rate
    /// outside 8-48 kHz or a channel count outside 0-8.
    pub fn from_proto(format: Option<&AudioFormat>, field: &str) -> Result<Self, RequestError> {
        let Some(format) = format else {
            return Err(RequestError::invalid(
                field,
                "audio_format is required (e.g. LINEAR16 at the capture rate)",
            ));
        };
        let sample = match AudioEncoding::try_from(format.encoding) {
            Ok(AudioEncoding::Linear16) => Sample::Pcm(SampleFormat::S16Le),
            Ok(AudioEncoding::Float32) => Sample::Pcm(SampleFormat::F32Le),
            Ok(AudioEncoding::Mulaw) => Sample::Mulaw,
            Ok(AudioEncoding::Alaw) => Sample::Alaw,
            Ok(AudioEncoding::Unspecified) => {
                return Err(RequestError::invalid(
                    format!("{field}.encoding"),
                    "streaming needs an explicit headerless encoding: LINEAR16, FLOAT32, MULAW or ALAW",
                ));
            }
            Ok(other) => {
                return Err(RequestError::invalid(
                    format!("{field}.encoding"),
                    format!(
                        "{} is not supported for streaming; send LINEAR16, FLOAT32, MULAW or ALAW \
                         (containers are accepted by Recognize)",
                        other.as_str_name()
                    ),
                ));
            }
            Err(_) => {
                return Err(RequestError::invalid(
                    format!("{field}.encoding"),
                    format!("unknown encoding value {}", format.encoding),
                ));
            }
        };
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&format.sample_rate_hertz) {
            return Err(RequestError::invalid(
                format!("{field}.sample_rate_hertz"),
                format!(
                    "{} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz; send the native capture rate",
                    format.sample_rate_hertz
                ),
            ));
        }
        if !(0..=MAX_CHANNELS).contains(&format.audio_channel_count) {
            return Err(RequestError::invalid(
                format!("{field}.audio_channel_count"),
                format!(
                    "{} channels: use 0 or 1 for mono, at most {MAX_CHANNELS}",
                    format.audio_channel_count
                ),
            ));
        }
        Ok(Self {
            sample,
            sample_rate: format.sample_rate_hertz as u32,
            channels: format.audio_channel_count.max(1) as u16,
        })
    }

    /// Bytes in one frame (one sample of every channel).
    pub fn frame_bytes(&self) -> usize {
        self.sample.bytes() * usize::from(self.channels)
    }

    /// Decodes whole frames of bytes to interleaved `f32`.
    ///
    /// # Errors
    /// [`RequestError::InvalidArgument`] when `bytes` is not whole frames or holds non-finite
    /// floats.
    pub fn to_f32(&self, bytes: &[u8], field: &str) -> Result<Vec<f32>, RequestError> {
        if !bytes.len().is_multiple_of(self.frame_bytes()) {
            return Err(RequestError::invalid(
                field,
                format!(
                    "{} bytes is not a whole number of {}-byte sample frames ({} channel(s)); \
                     split chunks on frame boundaries",
                    bytes.len(),
                    self.frame_bytes(),
                    self.channels
                ),
            ));
        }
        match self.sample {
            Sample::Pcm(format) => {
                pcm_to_f32(bytes, format).map_err(|e| RequestError::invalid(field, e.to_string()))
            }
            Sample::Mulaw => Ok(bytes.iter().map(|&b| g711::mulaw_to_f32(b)).collect()),
            Sample::Alaw => Ok(bytes.iter().map(|&b| g711::alaw_to_f32(b)).collect()),
        }
    }
}

/// Streaming conversion of one stream's chunks to 16 kHz mono.
#[derive(Debug)]
pub struct Ingest {
    format: RawFormat,
    converter: Converter,
    max_chunk_bytes: usize,
    frames_in: u64,
}

impl Ingest {
    /// A converter for `format` that rejects chunks above `max_chunk_bytes`.
    ///
    /// # Errors
    /// [`RequestError::InvalidArgument`] if the converter rejects the rate or channels.
    pub fn new(format: RawFormat, max_chunk_bytes: usize) -> Result<Self, RequestError> {
        let converter = Converter::new(format.sample_rate, format.channels).map_err(|e| {
            RequestError::invalid("streaming_config.config.audio_format", e.to_string())
        })?;
        Ok(Self {
            format,
            converter,
            max_chunk_bytes,
            frames_in: 0,
        })
    }

    /// Converts one chunk; returns the 16 kHz mono samples now ready.
    ///
    /// # Errors
    /// [`RequestError::InvalidArgument`] for an oversized chunk, partial frames or bad floats.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<f32>, RequestError> {
        const FIELD: &str = "audio_content";
        if bytes.len() > self.max_chunk_bytes {
            return Err(RequestError::invalid(
                FIELD,
                format!(
                    "chunk of {} bytes exceeds the server's limit of {} bytes; send 20-200 ms per message",
                    bytes.len(),
                    self.max_chunk_bytes
                ),
            ));
        }
        let interleaved = self.format.to_f32(bytes, FIELD)?;
        self.frames_in += (bytes.len() / self.format.frame_bytes()) as u64;
        Ok(self.converter.push(&interleaved))
    }

    /// Flushes the resampler at end of stream.
    pub fn finish(self) -> Vec<f32> {
        self.converter.finish()
    }

    /// Audio received so far (input frames at the input rate).
    pub fn received(&self) -> Duration {
        Duration::from_secs_f64(self.frames_in as f64 / f64::from(self.format.sample_rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(encoding: AudioEncoding, rate: i32, channels: i32) -> AudioFormat {
        AudioFormat {
            encoding: encoding.into(),
            sample_rate_hertz: rate,
            audio_channel_count: channels,
        }
    }

    fn field_of(result: Result<RawFormat, RequestError>) -> String {
        match result {
            Err(RequestError::InvalidArgument { field, .. }) => field,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn formats_validate_with_field_paths() {
        let f = "cfg.audio_format";
        assert_eq!(field_of(RawFormat::from_proto(None, f)), f);
        let cases = [
            (
                format(AudioEncoding::Unspecified, 16_000, 1),
                "cfg.audio_format.encoding",
            ),
            (
                format(AudioEncoding::Flac, 16_000, 1),
                "cfg.audio_format.encoding",
            ),
            (
                format(AudioEncoding::Linear16, 0, 1),
                "cfg.audio_format.sample_rate_hertz",
            ),
            (
                format(AudioEncoding::Linear16, 96_000, 1),
                "cfg.audio_format.sample_rate_hertz",
            ),
            (
                format(AudioEncoding::Float32, 16_000, -1),
                "cfg.audio_format.audio_channel_count",
            ),
            (
                format(AudioEncoding::Float32, 16_000, 9),
                "cfg.audio_format.audio_channel_count",
            ),
        ];
        for (fmt, want) in cases {
            assert_eq!(
                field_of(RawFormat::from_proto(Some(&fmt), f)),
                want,
                "{fmt:?}"
            );
        }
        let unknown = AudioFormat {
            encoding: 99,
            sample_rate_hertz: 16_000,
            audio_channel_count: 1,
        };
        assert_eq!(
            field_of(RawFormat::from_proto(Some(&unknown), f)),
            "cfg.audio_format.encoding"
        );
    }

    #[test]
    fn chunks_must_be_whole_frames() -> Result<(), RequestError> {
        let fmt = RawFormat::from_proto(Some(&format(AudioEncoding::Linear16, 16_000, 2)), "f")?;
        assert_eq!(fmt.frame_bytes(), 4);
        let mut ingest = Ingest::new(fmt, 64)?;
        assert!(matches!(
            ingest.push(&[0; 6]),
            Err(RequestError::InvalidArgument { .. })
        ));
        assert!(matches!(
            ingest.push(&[0; 68]),
            Err(RequestError::InvalidArgument { .. })
        ));
        assert_eq!(ingest.push(&[0; 8])?.len(), 2);
        assert_eq!(ingest.received(), Duration::from_secs_f64(2.0 / 16_000.0));
        Ok(())
    }

    #[test]
    fn stereo_48k_becomes_16k_mono() -> Result<(), RequestError> {
        let fmt = RawFormat::from_proto(Some(&format(AudioEncoding::Float32, 48_000, 2)), "f")?;
        let mut ingest = Ingest::new(fmt, 1 << 20)?;
        let bytes: Vec<u8> = (0..48_000 * 2)
            .flat_map(|_| 0.25f32.to_le_bytes())
            .collect();
        let mut out = Vec::new();
        for chunk in bytes.chunks(4 * 2 * 480) {
            out.extend(ingest.push(chunk)?);
        }
        out.extend(ingest.finish());
        assert_eq!(out.len(), 16_000);
        Ok(())
    }
}
