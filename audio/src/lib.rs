//! Audio ingest for `transcribe`: every way audio enters the pipeline (a file, raw PCM chunks
//! from a gRPC client, the microphone) ends here as 16 kHz mono `f32`
//! ([`transcribe_core::SAMPLE_RATE`]), the only format Whisper takes.
//!
//! Three entry points:
//! - [`decode_file`] reads WAV, FLAC, MP3, Ogg Vorbis, AIFF, M4A/AAC and NIST SPHERE files
//!   (format detected from the content) and returns [`DecodedAudio`]: the samples plus
//!   [`SourceInfo`] about the source. [`decode_bytes`] does the same for a file held in
//!   memory.
//! - [`Converter`] downmixes and resamples a stream pushed in chunks of any size; the output
//!   does not depend on the chunking, and [`decode_file`] uses the same converter, so a file
//!   and the same audio streamed give identical samples.
//! - [`pcm_to_f32`] turns raw client bytes ([`SampleFormat::S16Le`], [`SampleFormat::F32Le`])
//!   into samples for the converter.
//!
//! Every failure is an [`AudioError`] whose variants say what the caller can do; the ones about
//! a file name it.
//!
//! # Layout
//! - `decode`: [`decode_file`], [`decode_bytes`], format sniffing, hound (WAV) and symphonia (the rest) drivers,
//!   [`DecodedAudio`], [`SourceInfo`].
//! - `convert`: [`Converter`], channel averaging and rubato resampling with delay compensation.
//! - `pcm`: [`SampleFormat`] and raw PCM byte conversion ([`pcm_to_f32`]).
//! - `sphere`: the small NIST SPHERE reader (neither hound nor symphonia has one).
//! - [`g711`]: mu-law and A-law expansion, for SPHERE, WAV files symphonia rejects and
//!   streamed MULAW/ALAW audio.
//! - `error`: [`AudioError`].
//! - `capture` (feature `capture`, default): microphone capture with cpal (callback ->
//!   lock-free ring -> consumer thread -> [`Converter`] -> 16 kHz chunks), `list_devices`,
//!   `CaptureError`. Without the feature nothing links the system's ALSA library.
//!
//! # Example
//! ```
//! use transcribe_audio::{Converter, SampleFormat, pcm_to_f32};
//! # fn main() -> Result<(), transcribe_audio::AudioError> {
//! // A client streams 8 kHz mono s16le: convert each chunk as it arrives.
//! let mut conv = Converter::new(8_000, 1)?;
//! let chunk = vec![0u8; 1_600]; // 100 ms
//! let mut samples = conv.push(&pcm_to_f32(&chunk, SampleFormat::S16Le)?);
//! samples.extend(conv.finish());
//! assert_eq!(samples.len(), 1_600); // 100 ms at 16 kHz
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

#[cfg(feature = "capture")]
pub mod capture;
mod convert;
mod decode;
mod error;
pub mod g711;
mod pcm;
mod sphere;

pub use convert::{Converter, MAX_INPUT_RATE, MIN_INPUT_RATE};
pub use decode::{DecodedAudio, SourceInfo, decode_bytes, decode_file};
pub use error::AudioError;
pub use pcm::{SampleFormat, pcm_f32le_to_f32, pcm_s16le_to_f32, pcm_to_f32};
