//! NIST SPHERE (`.sph`, the LDC corpora's format: TIMIT, Switchboard, ...) with uncompressed
//! PCM or mu-law samples. Neither hound nor symphonia reads it, and the header is simple text.
//!
//! Layout (NIST SPHERE header spec, "sphere-2.6" documentation): the file opens with
//! `NIST_1A\n`, then the header size in bytes (usually `   1024\n`), then `name -type value`
//! lines (`-i` integer, `-r` real, `-sN` string of N bytes) up to `end_head`; samples start at
//! the header size. Shorten-compressed files (`sample_coding` containing `shorten`) are refused.

use std::io::Read;
use std::path::Path;

use crate::AudioError;
use crate::g711::mulaw_to_i16;

/// The magic at byte 0 of every SPHERE file.
pub(crate) const MAGIC: &[u8] = b"NIST_1A";

/// Largest header we accept; real ones are 1024 bytes.
const MAX_HEADER: usize = 64 * 1024;

/// Sample encodings this reader decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// Signed integers of `bytes` bytes (1 or 2), byte order as declared.
    Pcm { bytes: usize, big_endian: bool },
    /// G.711 mu-law, one byte per sample.
    MuLaw,
}

/// What the header declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub header_len: usize,
    pub sample_rate: u32,
    pub channels: u16,
    pub coding: Coding,
    /// Frames (samples per channel), when declared.
    pub sample_count: Option<u64>,
}

impl Header {
    /// ffmpeg-style codec name, for [`SourceInfo`](crate::SourceInfo).
    pub fn codec_name(&self) -> &'static str {
        match self.coding {
            Coding::Pcm { bytes: 1, .. } => "pcm_s8",
            Coding::Pcm {
                big_endian: true, ..
            } => "pcm_s16be",
            Coding::Pcm { .. } => "pcm_s16le",
            Coding::MuLaw => "pcm_mulaw",
        }
    }

    /// Bits per sample as stored.
    pub fn bits(&self) -> u32 {
        match self.coding {
            Coding::Pcm { bytes, .. } => 8 * bytes as u32,
            Coding::MuLaw => 8,
        }
    }

    fn bytes_per_sample(&self) -> usize {
        match self.coding {
            Coding::Pcm { bytes, .. } => bytes,
            Coding::MuLaw => 1,
        }
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> AudioError {
    AudioError::Corrupt {
        path: path.to_path_buf(),
        format: "NIST SPHERE",
        reason: reason.into(),
    }
}

fn unsupported(path: &Path, reason: impl Into<String>) -> AudioError {
    AudioError::Unsupported {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Parses the header at the start of `bytes` (which must hold the whole header).
pub(crate) fn parse_header(path: &Path, bytes: &[u8]) -> Result<Header, AudioError> {
    if !bytes.starts_with(MAGIC) {
        return Err(corrupt(path, "no NIST_1A magic"));
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_HEADER)]);
    let mut lines = text.lines();
    lines.next(); // NIST_1A
    let header_len: usize = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .filter(|&n| (16..=MAX_HEADER).contains(&n))
        .ok_or_else(|| corrupt(path, "the header size on line 2 is missing or invalid"))?;
    let mut sample_rate = None;
    let mut channels = 1u16;
    let mut n_bytes = None;
    let mut byte_format = None;
    let mut coding = String::from("pcm");
    let mut sample_count = None;
    let mut ended = false;
    for line in lines {
        let line = line.trim_end_matches('\r');
        if line.trim() == "end_head" {
            ended = true;
            break;
        }
        let mut parts = line.splitn(3, ' ');
        let (Some(name), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            continue; // comments and blank lines
        };
        let int = || -> Option<u64> {
            if kind == "-i" {
                value.trim().parse().ok()
            } else {
                None
            }
        };
        match name {
            "sample_rate" => {
                sample_rate = int().or_else(|| {
                    // Some writers declare the rate as a real.
                    value.trim().parse::<f64>().ok().map(|r| r.round() as u64)
                })
            }
            "channel_count" => {
                channels = int()
                    .and_then(|c| u16::try_from(c).ok())
                    .ok_or_else(|| corrupt(path, format!("bad channel_count {value:?}")))?
            }
            "sample_n_bytes" => n_bytes = int(),
            "sample_byte_format" => byte_format = Some(value.trim().to_owned()),
            "sample_coding" => coding = value.trim().to_ascii_lowercase(),
            "sample_count" => sample_count = int(),
            _ => {}
        }
    }
    if !ended {
        return Err(corrupt(
            path,
            "the header has no end_head line (truncated?)",
        ));
    }
    let sample_rate = sample_rate
        .and_then(|r| u32::try_from(r).ok())
        .filter(|&r| r > 0)
        .ok_or_else(|| corrupt(path, "the header declares no valid sample_rate"))?;
    if channels == 0 {
        return Err(corrupt(path, "channel_count is 0"));
    }
    if ["shorten", "wavpack", "shortpack"]
        .iter()
        .any(|c| coding.contains(c))
    {
        return Err(unsupported(
            path,
            format!(
                "compressed NIST SPHERE ({coding}) is not supported; decompress it first \
                 (sph2pipe -f wav) or convert it to WAV/FLAC"
            ),
        ));
    }
    let coding = if coding.starts_with("pcm") {
        let bytes = n_bytes.unwrap_or(2);
        if bytes != 1 && bytes != 2 {
            return Err(unsupported(
                path,
                format!("NIST SPHERE PCM with {bytes}-byte samples is not supported"),
            ));
        }
        let big_endian = bytes == 2 && byte_format.as_deref() == Some("10");
        Coding::Pcm {
            bytes: bytes as usize,
            big_endian,
        }
    } else if coding.starts_with("ulaw") || coding.starts_with("mu-law") {
        Coding::MuLaw
    } else {
        return Err(unsupported(
            path,
            format!("NIST SPHERE sample_coding {coding:?} is not supported"),
        ));
    };
    Ok(Header {
        header_len,
        sample_rate,
        channels,
        coding,
        sample_count,
    })
}

/// Reads the whole file and returns its header and interleaved samples in [-1, 1].
///
/// # Errors
/// [`AudioError::Corrupt`] for a malformed header or data shorter than `sample_count` says;
/// [`AudioError::Unsupported`] for compressed or unusual encodings; [`AudioError::Io`].
pub(crate) fn read(path: &Path, mut file: impl Read) -> Result<(Header, Vec<f32>), AudioError> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| AudioError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let header = parse_header(path, &bytes)?;
    let data = bytes
        .get(header.header_len..)
        .ok_or_else(|| corrupt(path, "the file is shorter than its header"))?;
    let width = header.bytes_per_sample();
    let channels = usize::from(header.channels);
    let available = (data.len() / width / channels) as u64;
    let frames = match header.sample_count {
        Some(declared) if declared > available => {
            return Err(corrupt(
                path,
                format!(
                    "the header declares {declared} samples per channel but the data holds \
                     only {available} (truncated?)"
                ),
            ));
        }
        Some(declared) => declared,
        None => available,
    };
    let len = usize::try_from(frames).unwrap_or(usize::MAX) * channels * width;
    let data = &data[..len.min(data.len())];
    let samples = match header.coding {
        Coding::Pcm { bytes: 1, .. } => data.iter().map(|&b| f32::from(b as i8) / 128.0).collect(),
        Coding::Pcm { big_endian, .. } => data
            .chunks_exact(2)
            .map(|b| {
                let v = if big_endian {
                    i16::from_be_bytes([b[0], b[1]])
                } else {
                    i16::from_le_bytes([b[0], b[1]])
                };
                f32::from(v) / 32_768.0
            })
            .collect(),
        Coding::MuLaw => data
            .iter()
            .map(|&b| f32::from(mulaw_to_i16(b)) / 32_768.0)
            .collect(),
    };
    Ok((header, samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header_lines: &[&str], data: &[u8]) -> Vec<u8> {
        let mut text = String::from("NIST_1A\n   1024\n");
        for l in header_lines {
            text.push_str(l);
            text.push('\n');
        }
        text.push_str("end_head\n");
        let mut bytes = text.into_bytes();
        bytes.resize(1024, b' ');
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn reads_16_bit_little_and_big_endian() -> Result<(), AudioError> {
        let le: Vec<u8> = [0i16, 16_384, -32_768]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = file(
            &[
                "sample_rate -i 8000",
                "channel_count -i 1",
                "sample_n_bytes -i 2",
                "sample_byte_format -s2 01",
                "sample_count -i 3",
                "sample_coding -s3 pcm",
            ],
            &le,
        );
        let (h, s) = read(Path::new("x.sph"), &bytes[..])?;
        assert_eq!((h.sample_rate, h.channels), (8_000, 1));
        assert_eq!(s, [0.0, 0.5, -1.0]);

        let be: Vec<u8> = [16_384i16].iter().flat_map(|v| v.to_be_bytes()).collect();
        let bytes = file(&["sample_rate -i 8000", "sample_byte_format -s2 10"], &be);
        let (h, s) = read(Path::new("x.sph"), &bytes[..])?;
        assert_eq!(h.codec_name(), "pcm_s16be");
        assert_eq!(s, [0.5]);
        Ok(())
    }

    #[test]
    fn eight_bit_pcm_is_signed() -> Result<(), AudioError> {
        let bytes = file(
            &["sample_rate -i 16000", "sample_n_bytes -i 1"],
            &[0x00, 0x40, 0xC0],
        );
        let (_, s) = read(Path::new("x.sph"), &bytes[..])?;
        assert_eq!(s, [0.0, 0.5, -0.5]);
        Ok(())
    }

    #[test]
    fn truncated_and_compressed_are_errors() {
        let bytes = file(&["sample_rate -i 8000", "sample_count -i 100"], &[0; 10]);
        let err = read(Path::new("t.sph"), &bytes[..]).err();
        assert!(matches!(err, Some(AudioError::Corrupt { .. })), "{err:?}");
        let bytes = file(
            &[
                "sample_rate -i 8000",
                "sample_coding -s26 pcm,embedded-shorten-v2.00",
            ],
            &[0; 10],
        );
        let err = read(Path::new("s.sph"), &bytes[..]).err();
        assert!(
            matches!(err, Some(AudioError::Unsupported { .. })),
            "{err:?}"
        );
        let err = read(
            Path::new("h.sph"),
            &b"NIST_1A\n   1024\nsample_rate -i 8000\n"[..],
        )
        .err();
        assert!(matches!(err, Some(AudioError::Corrupt { .. })), "{err:?}");
    }
}
