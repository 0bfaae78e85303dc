//! [`AudioError`]: everything that can go wrong in this crate, with the file or the stream
//! parameters it concerns.

use std::path::PathBuf;

use crate::pcm::SampleFormat;

/// Errors of audio ingest. Every variant that concerns a file names it in its `Display`.
///
/// Decoding errors are about the input, never transient: retrying the same file gives the same
/// error. The variant tells the caller what to say to the user (or, on the server, which status
/// to answer): [`Io`](AudioError::Io) is about the path, [`Unsupported`](AudioError::Unsupported)
/// asks for a conversion, [`Corrupt`](AudioError::Corrupt) and [`Empty`](AudioError::Empty) ask
/// for another file, and the rest are invalid arguments.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The file could not be opened or read: it does not exist, is not readable, or the read
    /// failed. Check the path and permissions; nothing about the content is known yet.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The file is not in a format or codec this crate decodes (unknown content, CAF, a
    /// compressed NIST SPHERE, headerless PCM, ...). `reason` says what was found; converting
    /// the file to WAV or FLAC (for example with ffmpeg) makes it readable.
    #[error("{}: unsupported audio: {reason}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What was found and, where possible, what to do about it.
        reason: String,
    },

    /// The file is in a supported format but its content is damaged: a malformed header,
    /// undecodable data, or data that ends before the header says it should (truncated).
    /// Re-export or re-download the file; nothing in it is usable.
    #[error("{}: corrupt or truncated {format} file: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The format the content was detected as (e.g. `"WAV"`, `"FLAC"`).
        format: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// The file is valid but holds no audio samples (for example a WAV with an empty data
    /// chunk). There is nothing to transcribe; the caller may treat it as an empty transcript.
    #[error("{}: the file contains no audio samples", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },

    /// A sample rate or channel count that [`Converter`](crate::Converter) cannot work with
    /// (zero channels, a rate of 0 Hz or outside [`MIN_INPUT_RATE`](crate::MIN_INPUT_RATE)
    /// ..= [`MAX_INPUT_RATE`](crate::MAX_INPUT_RATE)). The caller passed an invalid argument
    /// (or a file declares one): fix the stream configuration.
    #[error("cannot convert audio at {sample_rate} Hz with {channels} channel(s): {reason}")]
    InvalidStream {
        /// The input sample rate in Hz.
        sample_rate: u32,
        /// The input channel count.
        channels: u16,
        /// Why it is rejected.
        reason: &'static str,
    },

    /// Raw PCM bytes whose length is not a whole number of samples (an odd byte count for
    /// 16-bit samples, say). The sender split a sample across chunks or declared the wrong
    /// format: send whole samples in the declared format.
    #[error(
        "raw {format} PCM must be a whole number of {} byte samples, got {len} bytes",
        format.bytes_per_sample()
    )]
    PcmLength {
        /// The declared sample format.
        format: SampleFormat,
        /// The byte count received.
        len: usize,
    },

    /// Raw float PCM holding NaN or infinity, which would poison every later computation.
    /// The sender's audio is broken: send finite samples in [-1, 1].
    #[error("raw {format} PCM holds a non-finite sample (NaN or infinity) at index {index}")]
    NonFiniteSample {
        /// The declared sample format.
        format: SampleFormat,
        /// Index of the first offending sample.
        index: usize,
    },
}
