//! [`decode_file`]: any supported audio file to 16 kHz mono `f32` ([`DecodedAudio`]);
//! [`decode_bytes`]: the same for a file already in memory (an upload, a fuzzer's input).
//!
//! The format is detected from the content (magic bytes); the extension is only a hint for
//! content without a signature. WAV goes through hound (symphonia takes the encodings hound
//! lacks, such as mu-law or ADPCM); FLAC, MP3, Ogg (Vorbis, Opus), WebM/Matroska (Opus,
//! Vorbis), AIFF and MP4/AAC through symphonia, with libopus for Opus;
//! NIST SPHERE through [`crate::sphere`]. Every decoder streams into one [`Converter`], the same
//! one live streams use, so a file and the same audio sent in chunks give the same samples.

use std::fs::File;
use std::io::{BufReader, Cursor, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, CodecRegistry, DecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::{AudioError, Converter, g711, sphere};

/// A decoded file: 16 kHz mono samples and what the source was.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    /// Mono samples at [`transcribe_core::SAMPLE_RATE`], nominally in [-1, 1].
    pub samples: Vec<f32>,
    /// The source file's format.
    pub info: SourceInfo,
}

/// What a decoded file was, before conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    /// The file as given to [`decode_file`] (or the name given to [`decode_bytes`]).
    pub path: PathBuf,
    /// Container format: `"wav"`, `"flac"`, `"mp3"`, `"ogg"`, `"webm"`, `"matroska"`, `"aiff"`,
    /// `"mp4"`, `"aac"`, `"nist-sphere"`.
    pub container: &'static str,
    /// Codec, in ffmpeg's naming where it has one: `"pcm_s16le"`, `"pcm_f32le"`, `"flac"`,
    /// `"mp3"`, `"vorbis"`, `"opus"`, `"pcm_mulaw"`, ...
    pub codec: String,
    /// Source sample rate in Hz.
    pub sample_rate: u32,
    /// Source channel count (all channels are averaged into the mono output).
    pub channels: u16,
    /// Bits per sample of the stored samples, for PCM-like codecs; `None` for lossy codecs.
    pub bits_per_sample: Option<u32>,
    /// Source frames (samples per channel) decoded.
    pub frames: u64,
}

impl SourceInfo {
    /// Duration of the source in seconds (`frames / sample_rate`).
    pub fn duration_secs(&self) -> f64 {
        if self.sample_rate == 0 {
            0.0
        } else {
            self.frames as f64 / f64::from(self.sample_rate)
        }
    }
}

/// Bytes read to detect the format: enough for every signature below, including an Ogg
/// page header with a full segment table before the first packet (27 + 255 bytes).
const SNIFF_LEN: usize = 512;

/// Interleaved samples handed to the converter per call while decoding PCM.
const PCM_BLOCK: usize = 16_384;

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detected {
    Wav,
    Rf64,
    Flac,
    Mp3,
    Adts,
    Ogg,
    Aiff,
    Mp4,
    Sphere,
    Caf,
    WebM,
    Matroska,
    Unknown,
}

impl Detected {
    /// Container name for [`SourceInfo::container`] and error messages.
    fn container(self) -> &'static str {
        match self {
            Detected::Wav | Detected::Rf64 => "wav",
            Detected::Flac => "flac",
            Detected::Mp3 => "mp3",
            Detected::Adts => "aac",
            Detected::Ogg => "ogg",
            Detected::Aiff => "aiff",
            Detected::Mp4 => "mp4",
            Detected::Sphere => "nist-sphere",
            Detected::Caf => "caf",
            Detected::WebM => "webm",
            Detected::Matroska => "matroska",
            Detected::Unknown => "unknown",
        }
    }

    /// Format name for [`AudioError::Corrupt`].
    fn format_name(self) -> &'static str {
        match self {
            Detected::Wav | Detected::Rf64 => "WAV",
            Detected::Flac => "FLAC",
            Detected::Mp3 => "MP3",
            Detected::Adts => "AAC",
            Detected::Ogg => "Ogg",
            Detected::Aiff => "AIFF",
            Detected::Mp4 => "MP4",
            Detected::Sphere => "NIST SPHERE",
            Detected::Caf => "CAF",
            Detected::WebM => "WebM",
            Detected::Matroska => "Matroska",
            Detected::Unknown => "audio",
        }
    }
}

/// Detects the format from the first bytes of a file.
fn sniff(head: &[u8]) -> Detected {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, b"RIFF") && at(8, b"WAVE") {
        Detected::Wav
    } else if (at(0, b"RF64") || at(0, b"BW64")) && at(8, b"WAVE") {
        Detected::Rf64
    } else if at(0, b"fLaC") {
        Detected::Flac
    } else if at(0, b"OggS") {
        Detected::Ogg
    } else if at(0, b"FORM") && (at(8, b"AIFF") || at(8, b"AIFC")) {
        Detected::Aiff
    } else if at(4, b"ftyp") {
        Detected::Mp4
    } else if at(0, sphere::MAGIC) {
        Detected::Sphere
    } else if at(0, b"caff") {
        Detected::Caf
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        // EBML; the DocType element (ID 0x4282) in the header says which kind.
        if head.windows(4).any(|w| w == b"webm") {
            Detected::WebM
        } else {
            Detected::Matroska
        }
    } else if at(0, b"ID3") {
        // ID3v2 tags precede MP3 (rarely AAC) streams; symphonia's probe skips them.
        Detected::Mp3
    } else if let [0xFF, b1, b2, ..] = *head {
        // MPEG audio frame sync: 11 set bits, then version and layer. Layer 00 is ADTS AAC.
        let layer = (b1 >> 1) & 0x03;
        let bitrate = b2 >> 4;
        let rate = (b2 >> 2) & 0x03;
        if b1 & 0xE0 != 0xE0 {
            Detected::Unknown
        } else if layer == 0 && b1 & 0xF0 == 0xF0 {
            Detected::Adts
        } else if layer != 0 && bitrate != 0x0F && rate != 0x03 {
            Detected::Mp3
        } else {
            Detected::Unknown
        }
    } else {
        Detected::Unknown
    }
}

/// For content without a recognised signature: what the extension suggests, if it names a
/// format whose streams may legitimately start without one (MP3 or AAC after junk bytes).
/// A `.wav` is handed to hound, whose error then says what is wrong with the header.
fn from_extension(ext: &str) -> Detected {
    match ext {
        "wav" | "wave" => Detected::Wav,
        "mp3" => Detected::Mp3,
        "aac" => Detected::Adts,
        _ => Detected::Unknown,
    }
}

/// Decodes an audio file to 16 kHz mono `f32`.
///
/// Supported: WAV (8/16/24/32-bit PCM, 32/64-bit float, mu-law/A-law, extensible headers, any
/// rate and channel count), FLAC, MP3, Ogg Vorbis and Opus, WebM and Matroska with Opus or
/// Vorbis (what browsers' MediaRecorder writes), AIFF, MP4/M4A with AAC, ADTS AAC, and
/// uncompressed NIST SPHERE. Channels are averaged; see [`Converter`] for the resampling.
///
/// # Errors
/// [`AudioError::Io`] when the file cannot be opened or read; [`AudioError::Unsupported`] for
/// unrecognised content, headerless PCM and other formats without a decoder here;
/// [`AudioError::Corrupt`] for damaged or truncated files; [`AudioError::Empty`] when the
/// file holds no samples. Every error's `Display` names the file.
///
/// # Example
/// ```no_run
/// let audio = transcribe_audio::decode_file("speech.flac")?;
/// println!("{} s of {}", audio.info.duration_secs(), audio.info.codec);
/// # Ok::<(), transcribe_audio::AudioError>(())
/// ```
pub fn decode_file(path: impl AsRef<Path>) -> Result<DecodedAudio, AudioError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_source(path, file)
}

/// Decodes an audio file held in memory to 16 kHz mono `f32`, exactly as [`decode_file`]
/// decodes the same bytes read from disk.
///
/// `name` stands for the file: errors and [`SourceInfo::path`] carry it, and its extension is
/// the same hint it is for [`decode_file`] (content without a signature, such as MP3 after
/// junk bytes). It is never opened.
///
/// # Errors
/// As [`decode_file`], minus the I/O errors of reading a file.
///
/// # Example
/// ```
/// let err = transcribe_audio::decode_bytes(b"RIFF", "upload.wav").unwrap_err();
/// assert!(err.to_string().contains("upload.wav"));
/// ```
pub fn decode_bytes(bytes: &[u8], name: impl AsRef<Path>) -> Result<DecodedAudio, AudioError> {
    decode_source(name.as_ref(), Cursor::new(bytes.to_vec()))
}

/// [`decode_file`] and [`decode_bytes`]: sniffs the content of `src` and runs its decoder.
/// `path` only names the source (errors, [`SourceInfo::path`], the extension hint).
fn decode_source<S: MediaSource + 'static>(
    path: &Path,
    mut src: S,
) -> Result<DecodedAudio, AudioError> {
    let io = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut head = Vec::with_capacity(SNIFF_LEN);
    (&mut src)
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    if head.is_empty() {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    src.seek(SeekFrom::Start(0)).map_err(io)?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let detected = match sniff(&head) {
        Detected::Unknown => from_extension(&ext),
        found => found,
    };
    let unsupported = |reason: String| AudioError::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    let decoded = match detected {
        Detected::Wav => decode_wav(path, &mut src),
        Detected::Sphere => decode_sphere(path, src),
        Detected::Rf64 => Err(unsupported(
            "RF64/BW64 (64-bit WAV) is not supported; convert to FLAC or a plain WAV".into(),
        )),
        Detected::Caf => Err(unsupported(format!(
            "{} containers are not supported; convert to FLAC or WAV \
             (e.g. `ffmpeg -i IN -ar 16000 -ac 1 out.wav`)",
            detected.format_name()
        ))),
        Detected::Unknown if matches!(ext.as_str(), "pcm" | "raw" | "s16" | "f32") => {
            Err(unsupported(
                "headerless PCM has no sample rate or sample format to read; wrap it in WAV \
                 (e.g. `ffmpeg -f s16le -ar 16000 -ac 1 -i IN out.wav`) or send it to the \
                 server as raw chunks with the format declared"
                    .into(),
            ))
        }
        Detected::Unknown => Err(unsupported(format!(
            "unrecognised content (first bytes {}); supported: WAV, FLAC, MP3, Ogg (Vorbis, \
             Opus), WebM/Matroska (Opus, Vorbis), AIFF, M4A/AAC, NIST SPHERE",
            hex_prefix(&head)
        ))),
        Detected::Flac
        | Detected::Mp3
        | Detected::Adts
        | Detected::Ogg
        | Detected::WebM
        | Detected::Matroska
        | Detected::Aiff
        | Detected::Mp4 => decode_symphonia(path, src, detected),
    }?;
    // The decoders reject non-finite input; this also catches finite values so large that
    // downmixing overflows them.
    if decoded.samples.iter().any(|s| !s.is_finite()) {
        return Err(AudioError::Corrupt {
            path: path.to_path_buf(),
            format: detected.format_name(),
            reason: "the samples are too large to convert (float samples must be finite, \
                     nominally in [-1, 1])"
                .into(),
        });
    }
    Ok(decoded)
}

/// A float file holding NaN or infinity: it would poison every later computation, as it
/// would from a streaming client ([`AudioError::NonFiniteSample`]).
fn non_finite(path: &Path, format: &'static str, index: u64) -> AudioError {
    AudioError::Corrupt {
        path: path.to_path_buf(),
        format,
        reason: format!(
            "sample {index} is NaN or infinite; float samples must be finite, nominally in [-1, 1]"
        ),
    }
}

/// symphonia's codecs plus Opus (libopus through `symphonia-adapter-libopus`): symphonia 0.5
/// demuxes Opus from Ogg and Matroska but has no decoder for it.
fn codecs() -> &'static CodecRegistry {
    static CODECS: std::sync::LazyLock<CodecRegistry> = std::sync::LazyLock::new(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_all::<symphonia_adapter_libopus::OpusDecoder>();
        registry
    });
    &CODECS
}

fn hex_prefix(head: &[u8]) -> String {
    head.iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A converter for a file's stream; a rate or channel count it cannot take is the file's fault.
fn converter_for(path: &Path, rate: u32, channels: u16) -> Result<Converter, AudioError> {
    Converter::new(rate, channels).map_err(|e| AudioError::Unsupported {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// hound reports a file that ends early as `UnexpectedEof` or, from its own read loop, as
/// `Other` with "Failed to read enough bytes.".
fn is_short_read(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::UnexpectedEof
        || (e.kind() == ErrorKind::Other && e.to_string().contains("enough bytes"))
}

/// WAV through hound; encodings hound does not read go to symphonia (which reads `src` again
/// from the start).
fn decode_wav<S: Read + Seek>(path: &Path, src: &mut S) -> Result<DecodedAudio, AudioError> {
    let corrupt = |reason: String| AudioError::Corrupt {
        path: path.to_path_buf(),
        format: "WAV",
        reason,
    };
    let mut reader = match hound::WavReader::new(BufReader::new(&mut *src)) {
        Ok(r) => r,
        Err(hound::Error::Unsupported) => return decode_wav_with_symphonia(path, src),
        // hound calls some encodings it lacks malformed: 64-bit float ("bits per sample is not
        // 32"), IMA and MS ADPCM ("inconsistent fmt chunk"). symphonia reads those; when it
        // cannot either, hound's reason is the one to report.
        Err(hound::Error::FormatError(reason)) => {
            return decode_wav_with_symphonia(path, src).map_err(|e| match e {
                AudioError::Corrupt { .. } | AudioError::Unsupported { .. } => {
                    corrupt(format!("Ill-formed WAVE file: {reason}"))
                }
                other => other,
            });
        }
        Err(hound::Error::IoError(e)) if is_short_read(&e) => {
            return Err(corrupt("the header is cut short (truncated file?)".into()));
        }
        Err(hound::Error::IoError(source)) => {
            return Err(AudioError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        Err(e) => return Err(corrupt(e.to_string())),
    };
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(corrupt(format!(
            "the header declares {} Hz with {} channels",
            spec.sample_rate, spec.channels
        )));
    }
    let declared = u64::from(reader.len());
    let codec = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, bits) => format!("pcm_f{bits}le"),
        (hound::SampleFormat::Int, 8) => "pcm_u8".to_owned(),
        (hound::SampleFormat::Int, bits) => format!("pcm_s{bits}le"),
    };
    let mut conv = converter_for(path, spec.sample_rate, spec.channels)?;
    let mut out = Vec::new();
    let mut block = Vec::with_capacity(PCM_BLOCK);
    let mut read: u64 = 0;
    let mut failure = None;
    match spec.sample_format {
        hound::SampleFormat::Float => {
            for s in reader.samples::<f32>() {
                match s {
                    Ok(v) if v.is_finite() => block.push(v),
                    Ok(_) => return Err(non_finite(path, "WAV", read + block.len() as u64)),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                if block.len() == PCM_BLOCK {
                    conv.push_into(&block, &mut out);
                    read += block.len() as u64;
                    block.clear();
                }
            }
        }
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.clamp(1, 32) - 1)) as f32;
            for s in reader.samples::<i32>() {
                match s {
                    Ok(v) => block.push(v as f32 * scale),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                if block.len() == PCM_BLOCK {
                    conv.push_into(&block, &mut out);
                    read += block.len() as u64;
                    block.clear();
                }
            }
        }
    }
    conv.push_into(&block, &mut out);
    read += block.len() as u64;
    match failure {
        None => {}
        // Widths hound cannot read (12-bit, 20-bit in 3 bytes, 64-bit float...).
        Some(hound::Error::Unsupported | hound::Error::TooWide) if read == 0 => {
            drop(reader);
            return decode_wav_with_symphonia(path, src);
        }
        Some(hound::Error::IoError(e)) if is_short_read(&e) => {
            // A data size of 0xFFFFFFFF (or close) is how streaming writers say "unknown
            // length"; the data then simply ends. Anything else that ends early is truncated.
            let bytes_per_sample = u64::from(spec.bits_per_sample.div_ceil(8).max(1));
            if declared * bytes_per_sample < 0xFFFF_0000 {
                return Err(corrupt(format!(
                    "the data ends after {} of the {declared} samples the header declares \
                     (truncated file?)",
                    read
                )));
            }
        }
        Some(hound::Error::IoError(source)) => {
            return Err(AudioError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        Some(e) => return Err(corrupt(e.to_string())),
    }
    let frames = read / u64::from(spec.channels);
    if frames == 0 {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    out.extend(conv.finish());
    Ok(DecodedAudio {
        samples: out,
        info: SourceInfo {
            path: path.to_path_buf(),
            container: "wav",
            codec,
            sample_rate: spec.sample_rate,
            channels: spec.channels,
            bits_per_sample: Some(u32::from(spec.bits_per_sample)),
            frames,
        },
    })
}

/// WAV encodings hound does not read: G.711 (mu-law, A-law) here, the rest (ADPCM, 64-bit
/// float, odd widths) through symphonia. Reads all of `src` from its start.
fn decode_wav_with_symphonia<S: Read + Seek>(
    path: &Path,
    src: &mut S,
) -> Result<DecodedAudio, AudioError> {
    let io = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    src.seek(SeekFrom::Start(0))
        .and_then(|_| src.read_to_end(&mut bytes))
        .map_err(io)?;
    if let Some(wav) = G711Wav::parse(&bytes) {
        return decode_g711_wav(path, &wav);
    }
    decode_symphonia(path, Cursor::new(bytes), Detected::Wav)
}

/// WAVE format tags of the G.711 codecs (RFC 2361, appendix A).
const WAVE_FORMAT_ALAW: u16 = 6;
const WAVE_FORMAT_MULAW: u16 = 7;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// A WAV file holding 8-bit G.711 samples, located by a minimal RIFF chunk walk.
struct G711Wav<'a> {
    mulaw: bool,
    channels: u16,
    sample_rate: u32,
    data: &'a [u8],
    declared: u32,
}

impl<'a> G711Wav<'a> {
    /// `Some` for a RIFF/WAVE file whose `fmt ` chunk says mu-law or A-law (plain or as the
    /// extensible sub-format) and that has a `data` chunk.
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        if bytes.get(0..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
            return None;
        }
        let u16_at =
            |b: &[u8], i: usize| Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?));
        let u32_at =
            |b: &[u8], i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
        let mut fmt = None;
        let mut pos = 12usize;
        while pos.checked_add(8)? <= bytes.len() {
            let id = bytes.get(pos..pos + 4)?;
            let size = u32_at(bytes, pos + 4)?;
            let start = pos + 8;
            let end = start.saturating_add(size as usize).min(bytes.len());
            let body = &bytes[start..end];
            if id == b"fmt " {
                let mut tag = u16_at(body, 0)?;
                if tag == WAVE_FORMAT_EXTENSIBLE {
                    tag = u16_at(body, 24)?; // first two bytes of the sub-format GUID
                }
                let channels = u16_at(body, 2)?;
                let sample_rate = u32_at(body, 4)?;
                let bits = u16_at(body, 14)?;
                fmt = Some((tag, channels, sample_rate, bits));
            } else if id == b"data" {
                let (tag, channels, sample_rate, bits) = fmt?;
                if !matches!(tag, WAVE_FORMAT_ALAW | WAVE_FORMAT_MULAW) || bits != 8 {
                    return None;
                }
                return Some(Self {
                    mulaw: tag == WAVE_FORMAT_MULAW,
                    channels,
                    sample_rate,
                    data: body,
                    declared: size,
                });
            }
            pos = start
                .checked_add(size as usize)?
                .checked_add((size & 1) as usize)?;
        }
        None
    }
}

fn decode_g711_wav(path: &Path, wav: &G711Wav<'_>) -> Result<DecodedAudio, AudioError> {
    // 0xFFFFFFFF is how streaming writers say "unknown length".
    if wav.declared != u32::MAX && (wav.data.len() as u64) < u64::from(wav.declared) {
        return Err(AudioError::Corrupt {
            path: path.to_path_buf(),
            format: "WAV",
            reason: format!(
                "the data ends after {} of the {} bytes the header declares (truncated file?)",
                wav.data.len(),
                wav.declared
            ),
        });
    }
    let channels = usize::from(wav.channels.max(1));
    let whole = wav.data.len() / channels * channels;
    let frames = (whole / channels) as u64;
    if frames == 0 {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    let expand = if wav.mulaw {
        g711::mulaw_to_i16
    } else {
        g711::alaw_to_i16
    };
    let samples: Vec<f32> = wav.data[..whole]
        .iter()
        .map(|&b| f32::from(expand(b)) / 32_768.0)
        .collect();
    let mut conv = converter_for(path, wav.sample_rate, wav.channels)?;
    let mut out = conv.push(&samples);
    out.extend(conv.finish());
    Ok(DecodedAudio {
        samples: out,
        info: SourceInfo {
            path: path.to_path_buf(),
            container: "wav",
            codec: if wav.mulaw { "pcm_mulaw" } else { "pcm_alaw" }.to_owned(),
            sample_rate: wav.sample_rate,
            channels: wav.channels,
            bits_per_sample: Some(8),
            frames,
        },
    })
}

fn decode_sphere(path: &Path, src: impl Read) -> Result<DecodedAudio, AudioError> {
    let (header, samples) = sphere::read(path, BufReader::new(src))?;
    let frames = (samples.len() / usize::from(header.channels)) as u64;
    if frames == 0 {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut conv = converter_for(path, header.sample_rate, header.channels)?;
    let mut out = conv.push(&samples);
    out.extend(conv.finish());
    Ok(DecodedAudio {
        samples: out,
        info: SourceInfo {
            path: path.to_path_buf(),
            container: "nist-sphere",
            codec: header.codec_name().to_owned(),
            sample_rate: header.sample_rate,
            channels: header.channels,
            bits_per_sample: Some(header.bits()),
            frames,
        },
    })
}

/// Everything symphonia decodes: FLAC, MP3, Ogg and WebM (Vorbis, Opus), AIFF, MP4/AAC, and
/// WAV encodings hound lacks.
///
/// symphonia 0.5 panics on some malformed headers: an AIFF or WAV declaring 0 Hz reaches
/// `TimeBase::new(1, 0)`, which asserts (found by the `audio_decode` fuzz target). A panic in
/// there is the file's fault, so it is caught and reported as [`AudioError::Corrupt`].
fn decode_symphonia<S: MediaSource + 'static>(
    path: &Path,
    src: S,
    detected: Detected,
) -> Result<DecodedAudio, AudioError> {
    let run = std::panic::AssertUnwindSafe(|| symphonia_decode(path, src, detected));
    std::panic::catch_unwind(run).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(AudioError::Corrupt {
            path: path.to_path_buf(),
            format: detected.format_name(),
            reason: format!("the decoder failed on malformed data ({message})"),
        })
    })
}

fn symphonia_decode<S: MediaSource + 'static>(
    path: &Path,
    src: S,
    detected: Detected,
) -> Result<DecodedAudio, AudioError> {
    let format_name = detected.format_name();
    let corrupt = |reason: String| AudioError::Corrupt {
        path: path.to_path_buf(),
        format: format_name,
        reason,
    };
    let unsupported = |reason: String| AudioError::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    let io = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };

    let mut hint = Hint::new();
    hint.with_extension(match detected {
        Detected::Adts => "aac",
        Detected::Mp4 => "m4a",
        Detected::Matroska => "mkv",
        other => other.container(),
    });
    let stream = MediaSourceStream::new(Box::new(src), Default::default());
    // Gapless: trim the encoder delay and padding MP3/AAC declare, as ffmpeg does, so the
    // samples line up with the source.
    let format_opts = FormatOptions {
        enable_gapless: true,
        ..Default::default()
    };
    let probed = symphonia::default::get_probe()
        .format(&hint, stream, &format_opts, &MetadataOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(_) => unsupported(format!(
                "the content looks like {format_name} but no demuxer recognises it"
            )),
            SymError::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
                corrupt("the file ends inside its header (truncated?)".into())
            }
            SymError::IoError(e) => io(e),
            other => corrupt(other.to_string()),
        })?;
    let mut reader = probed.format;
    let track = reader
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| unsupported(format!("the {format_name} file has no audio track")))?;
    let track_id = track.id;
    let params = track.codec_params.clone();
    let codecs = codecs();
    let codec_name = codecs
        .get_codec(params.codec)
        .map(|d| d.short_name)
        .unwrap_or("unknown");
    let mut decoder = codecs
        .make(&params, &DecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(_) => unsupported(format!(
                "the {codec_name} codec in this {format_name} file is not supported; convert \
                 to FLAC or WAV"
            )),
            other => corrupt(other.to_string()),
        })?;
    let lossless = codec_name == "flac" || codec_name.starts_with("pcm");
    let bits = params.bits_per_sample.or(if lossless {
        params.bits_per_coded_sample
    } else {
        None
    });

    let mut conv: Option<Converter> = None;
    let mut stream_spec = None;
    let mut buf: Option<SampleBuffer<f32>> = None;
    let mut out = Vec::new();
    let mut frames: u64 = 0;
    let (mut good, mut bad) = (0u64, 0u64);
    let mut last_bad = String::new();
    loop {
        let packet = match reader.next_packet() {
            Ok(p) => p,
            // End of stream: symphonia reports it as an unexpected EOF.
            Err(SymError::IoError(e)) if e.kind() == ErrorKind::UnexpectedEof => break,
            // A chained stream (new Ogg logical stream): we take the first one.
            Err(SymError::ResetRequired) => break,
            Err(SymError::IoError(e)) => return Err(io(e)),
            Err(e) => return Err(corrupt(format!("demuxing failed: {e}"))),
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            Err(SymError::DecodeError(msg)) => {
                bad += 1;
                last_bad = msg.to_owned();
                // Keep the timeline: a lost packet becomes silence of its duration.
                if let (Some(c), Some((rate, channels))) = (conv.as_mut(), stream_spec) {
                    let dur = packet.dur().min(u64::from(rate)) as usize;
                    c.push_into(&vec![0.0; dur * usize::from(channels)], &mut out);
                    frames += dur as u64;
                }
                continue;
            }
            Err(SymError::IoError(e)) => {
                bad += 1;
                last_bad = e.to_string();
                continue;
            }
            Err(SymError::ResetRequired) => break,
            Err(e) => return Err(corrupt(format!("decoding failed: {e}"))),
        };
        let spec = *decoded.spec();
        let channels = u16::try_from(spec.channels.count()).unwrap_or(0);
        match stream_spec {
            None => {
                conv = Some(converter_for(path, spec.rate, channels)?);
                stream_spec = Some((spec.rate, channels));
            }
            Some(s) if s != (spec.rate, channels) => {
                return Err(unsupported(format!(
                    "the stream changes from {} Hz/{} ch to {} Hz/{} ch midway",
                    s.0, s.1, spec.rate, channels
                )));
            }
            Some(_) => {}
        }
        good += 1;
        if decoded.frames() == 0 {
            continue;
        }
        let needed = decoded.capacity() as u64;
        let sample_buf = match &mut buf {
            Some(b) if b.capacity() as u64 >= needed * u64::from(channels) => b,
            slot => slot.insert(SampleBuffer::new(needed, spec)),
        };
        let decoded_frames = decoded.frames() as u64;
        sample_buf.copy_interleaved_ref(decoded);
        if let Some(i) = sample_buf.samples().iter().position(|s| !s.is_finite()) {
            let index = frames * u64::from(channels) + i as u64;
            return Err(non_finite(path, format_name, index));
        }
        frames += decoded_frames;
        if let Some(c) = conv.as_mut() {
            c.push_into(sample_buf.samples(), &mut out);
        }
    }

    let (Some(conv), Some((rate, channels))) = (conv, stream_spec) else {
        return Err(if bad > 0 {
            corrupt(format!(
                "no packet could be decoded ({bad} failed: {last_bad})"
            ))
        } else {
            AudioError::Empty {
                path: path.to_path_buf(),
            }
        });
    };
    if bad > good {
        return Err(corrupt(format!(
            "{bad} of {} packets could not be decoded (last: {last_bad})",
            bad + good
        )));
    }
    if frames == 0 {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    // symphonia 0.5's AIFF reader counts the SSND chunk's 8-byte offset/block-size header as
    // audio, declaring up to 8 bytes' worth of frames more than there are.
    let slack = if detected == Detected::Aiff {
        let block = u64::from(bits.unwrap_or(8).div_ceil(8)) * u64::from(channels);
        8u64.div_ceil(block.max(1))
    } else {
        0
    };
    if let Some(declared) = params.n_frames
        && lossless
        && frames + slack < declared
    {
        return Err(corrupt(format!(
            "the data ends after {frames} of the {declared} frames the header declares \
                 (truncated file?)"
        )));
    }
    out.extend(conv.finish());
    Ok(DecodedAudio {
        samples: out,
        info: SourceInfo {
            path: path.to_path_buf(),
            container: detected.container(),
            codec: codec_name.to_owned(),
            sample_rate: rate,
            channels,
            bits_per_sample: bits,
            frames,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;
    use std::io::Write;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// A 440 Hz tone with a slow ramp, so every sample differs.
    fn test_signal(n: usize, rate: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (0.8 * (2.0 * PI * 440.0 * t).sin() * (0.5 + 0.5 * (i as f64 / n as f64))) as f32
            })
            .collect()
    }

    fn write_wav(
        path: &Path,
        spec: hound::WavSpec,
        container_bytes: Option<u16>,
        samples: &[f32],
    ) -> TestResult {
        let file = std::io::BufWriter::new(File::create(path)?);
        let mut w = match container_bytes {
            Some(bytes) => hound::WavWriter::new_with_spec_ex(
                file,
                hound::WavSpecEx {
                    spec,
                    bytes_per_sample: bytes,
                },
            )?,
            None => hound::WavWriter::new(file, spec)?,
        };
        for &s in samples {
            match spec.sample_format {
                hound::SampleFormat::Float => w.write_sample(s)?,
                hound::SampleFormat::Int => {
                    let max = (1i64 << (spec.bits_per_sample - 1)) as f64;
                    let v = (f64::from(s) * max).round().clamp(-max, max - 1.0) as i32;
                    w.write_sample(v)?
                }
            }
        }
        w.finalize()?;
        Ok(())
    }

    fn spec(rate: u32, channels: u16, bits: u16, float: bool) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        }
    }

    #[test]
    fn wav_widths_read_back_within_quantisation() -> TestResult {
        let dir = tempfile::tempdir()?;
        let signal = test_signal(4_000, 16_000);
        // (bits, float, container bytes, codec name)
        let cases: [(u16, bool, Option<u16>, &str); 6] = [
            (8, false, None, "pcm_u8"),
            (16, false, None, "pcm_s16le"),
            (24, false, None, "pcm_s24le"),
            (24, false, Some(4), "pcm_s24le"), // WAVE_FORMAT_EXTENSIBLE, 24 bits in 4 bytes
            (32, false, None, "pcm_s32le"),
            (32, true, None, "pcm_f32le"),
        ];
        for (bits, float, container, codec) in cases {
            let path = dir.path().join(format!("w{bits}{float}{container:?}.wav"));
            write_wav(&path, spec(16_000, 1, bits, float), container, &signal)?;
            let audio = decode_file(&path)?;
            let tolerance = if float {
                0.0
            } else {
                1.0 / f32::powi(2.0, i32::from(bits) - 1)
            };
            assert_eq!(audio.samples.len(), signal.len());
            let worst = audio
                .samples
                .iter()
                .zip(&signal)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                worst <= tolerance,
                "{bits} bit: error {worst} > {tolerance}"
            );
            let info = &audio.info;
            assert_eq!(
                (
                    info.container,
                    info.codec.as_str(),
                    info.sample_rate,
                    info.channels
                ),
                ("wav", codec, 16_000, 1)
            );
            assert_eq!(info.bits_per_sample, Some(u32::from(bits)));
            assert_eq!(info.frames, 4_000);
            assert!((info.duration_secs() - 0.25).abs() < 1e-9);
        }
        Ok(())
    }

    #[test]
    fn multichannel_extensible_wav_is_averaged() -> TestResult {
        // More than two channels makes hound write WAVE_FORMAT_EXTENSIBLE.
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("three.wav");
        let frames: Vec<f32> = (0..1_000).flat_map(|_| [0.5, -0.25, 0.5]).collect();
        write_wav(&path, spec(16_000, 3, 16, false), None, &frames)?;
        let audio = decode_file(&path)?;
        assert_eq!(audio.info.channels, 3);
        assert_eq!(audio.samples.len(), 1_000);
        assert!(audio.samples.iter().all(|&s| (s - 0.25).abs() < 1e-4));
        Ok(())
    }

    #[test]
    fn stereo_cancelling_channels_give_silence() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("cancel.wav");
        let frames: Vec<f32> = (0..800).flat_map(|_| [1.0, -1.0]).collect();
        write_wav(&path, spec(16_000, 2, 32, true), None, &frames)?;
        let audio = decode_file(&path)?;
        assert_eq!(audio.samples, vec![0.0; 800]);
        Ok(())
    }

    #[test]
    fn file_decoding_equals_streaming_conversion() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("stereo.wav");
        let interleaved = test_signal(2 * 33_333, 22_050);
        write_wav(&path, spec(22_050, 2, 32, true), None, &interleaved)?;
        let audio = decode_file(&path)?;
        let mut conv = Converter::new(22_050, 2)?;
        let mut streamed = Vec::new();
        for chunk in interleaved.chunks(777) {
            conv.push_into(chunk, &mut streamed);
        }
        streamed.extend(conv.finish());
        assert!(
            audio.samples == streamed,
            "file and streamed outputs differ"
        );
        assert_eq!(
            audio.samples.len(),
            (33_333.0f64 * 16_000.0 / 22_050.0).round() as usize
        );
        Ok(())
    }

    /// Decodes `bytes` written to `name` in a temporary directory, returning the error.
    fn decode_bytes_err(
        name: &str,
        bytes: &[u8],
    ) -> Result<AudioError, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(name);
        File::create(&path)?.write_all(bytes)?;
        match decode_file(&path) {
            Ok(a) => Err(format!(
                "{name}: decoded {} samples, expected an error",
                a.samples.len()
            )
            .into()),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(name), "error does not name the file: {msg}");
                Ok(e)
            }
        }
    }

    fn valid_wav_bytes(n: usize) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("v.wav");
        write_wav(
            &path,
            spec(16_000, 1, 16, false),
            None,
            &test_signal(n, 16_000),
        )?;
        Ok(std::fs::read(path)?)
    }

    /// Every fixture, good or corrupt, decodes from memory exactly as from disk: the same
    /// samples and info, or the same error with the same message.
    #[test]
    fn bytes_decode_like_files() -> TestResult {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../audio-fixtures");
        let mut checked = 0;
        for dir in ["formats", "corrupt"] {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(dir))?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()?;
            paths.sort();
            for path in paths
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e != "md"))
            {
                let from_file = decode_file(path);
                let from_bytes = decode_bytes(&std::fs::read(path)?, path);
                match (&from_file, &from_bytes) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{}", path.display()),
                    (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                    _ => panic!("{}: {from_file:?} vs {from_bytes:?}", path.display()),
                }
                checked += 1;
            }
        }
        assert!(checked >= 10, "only {checked} fixtures");
        Ok(())
    }

    /// Opus in Ogg (a voice note) and in WebM (a browser recording, stereo) decodes to the
    /// speech it was encoded from: the same length, and the same waveform up to the codec's
    /// loss (libopus at 24 and 64 kbit/s).
    #[test]
    fn opus_in_ogg_and_webm_decodes_to_its_source() -> TestResult {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../audio-fixtures");
        let source = decode_file(root.join("speech/short.wav"))?.samples;
        for (name, container, channels) in [
            ("formats/opus_48k_mono.opus", "ogg", 1),
            ("formats/webm_48k_stereo_opus.webm", "webm", 2),
        ] {
            let audio = decode_file(root.join(name))?;
            assert_eq!(audio.info.container, container, "{name}");
            assert_eq!(audio.info.codec, "opus", "{name}");
            // libopus decodes at the rate the container names: Ogg Opus always says 48 kHz,
            // ffmpeg's WebM says the encoder's input rate (16 kHz here).
            assert!(
                [16_000, 48_000].contains(&audio.info.sample_rate),
                "{name}: {:?}",
                audio.info
            );
            assert_eq!(audio.info.channels, channels, "{name}");
            // The encoder's pre-skip is removed: no leading delay, no extra length.
            let len_diff = audio.samples.len().abs_diff(source.len());
            assert!(
                len_diff <= 16,
                "{name}: {} vs {}",
                audio.samples.len(),
                source.len()
            );
            let corr = pearson(&audio.samples, &source);
            println!(
                "{name}: {} samples, correlation {corr:.4}",
                audio.samples.len()
            );
            assert!(corr > 0.9, "{name}: correlation {corr}");
        }
        Ok(())
    }

    /// Cut Opus files are errors naming the file: an Ogg Opus cut inside its headers, and a
    /// WebM cut in half (its index then points past the end; symphonia panics on that, which
    /// [`decode_symphonia`] turns into this error).
    #[test]
    fn cut_opus_files_are_corrupt() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../audio-fixtures/corrupt");
        for (name, format) in [
            ("truncated_header.opus", "Ogg"),
            ("truncated_opus.webm", "WebM"),
        ] {
            let e = decode_file(root.join(name)).err();
            assert!(
                matches!(&e, Some(AudioError::Corrupt { format: f, .. }) if *f == format),
                "{name}: {e:?}"
            );
            assert!(e.is_some_and(|e| e.to_string().contains(name)));
        }
    }

    /// Pearson correlation of two equally long stretches, at lag 0.
    fn pearson(a: &[f32], b: &[f32]) -> f64 {
        let n = a.len().min(b.len());
        let (a, b) = (&a[..n], &b[..n]);
        let mean = |x: &[f32]| x.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        let (ma, mb) = (mean(a), mean(b));
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        ab / (aa * bb).sqrt().max(f64::MIN_POSITIVE)
    }

    /// Found by the `audio_decode` fuzz harness on its hand-made seeds: a float WAV holding
    /// NaN or infinity decoded to NaN at 16 kHz and panicked inside rubato at other rates;
    /// values near `f32::MAX` panicked there too. Now: a clear error for non-finite samples,
    /// finite output for huge ones.
    #[test]
    fn non_finite_float_wav_is_corrupt() -> TestResult {
        let wav = |value: f32, rate: u32| {
            let mut data = Vec::new();
            for i in 0..4_000 {
                let v = if i % 50 < 8 { value } else { 0.1 };
                data.extend_from_slice(&f32::to_le_bytes(v));
            }
            wav_with_tag(3, rate, 32, &data)
        };
        for rate in [16_000, 44_100] {
            for value in [f32::NAN, f32::NEG_INFINITY] {
                let e = decode_bytes(&wav(value, rate), "bad.wav").err();
                assert!(
                    matches!(&e, Some(AudioError::Corrupt { format: "WAV", reason, .. }) if reason.contains("sample 0 is NaN or infinite")),
                    "{value} at {rate} Hz: {e:?}"
                );
            }
            let huge = decode_bytes(&wav(f32::MAX, rate), "huge.wav")?;
            assert!(huge.samples.iter().all(|s| s.is_finite()), "{rate} Hz");
        }
        Ok(())
    }

    /// Found by the `audio_decode` fuzz target: symphonia 0.5 panics ("TimeBase cannot have
    /// 0 numerator or denominator") on an AIFF or a symphonia-decoded WAV declaring 0 Hz.
    #[test]
    fn zero_rate_aiff_and_adpcm_wav_are_corrupt() {
        let mut aiff = b"FORM\0\0\0\x2eAIFFCOMM\0\0\0\x12\0\x01\0\0\0\x04\0\x10".to_vec();
        aiff.extend_from_slice(&[0; 10]); // an 80-bit extended sample rate of 0
        aiff.extend_from_slice(b"SSND\0\0\0\x10\0\0\0\0\0\0\0\0");
        aiff.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut adpcm = wav_with_tag(0x11, 0, 4, &[0x11; 256]);
        adpcm[32..34].copy_from_slice(&256u16.to_le_bytes()); // block align
        for (bytes, name) in [(aiff, "zero.aiff"), (adpcm, "zero.wav")] {
            let e = decode_bytes(&bytes, name).err();
            assert!(
                matches!(
                    &e,
                    Some(AudioError::Corrupt { .. } | AudioError::Unsupported { .. })
                ),
                "{name}: {e:?}"
            );
        }
    }

    /// Inputs on which symphonia 0.5.5 panics in a release build, found by the `audio_decode`
    /// fuzz target (`fuzz/corpus/audio_decode/panic-*`; the first byte picks the file name, as
    /// in `fuzz/harness/audio.rs`): AAC `ics` index out of bounds (lines 242, 365), the ADTS
    /// length estimate's `step_by(0)`, a 0 Hz `TimeBase`, an `unreachable!` in the ADPCM
    /// decoder (a WAV hound calls ill-formed, so hound's reason is reported). Each is a Corrupt
    /// error.
    #[test]
    fn symphonia_panics_are_corrupt_errors() -> TestResult {
        const NAMES: [&str; 10] = [
            "in.wav", "in.mp3", "in.aac", "in.flac", "in.ogg", "in.sph", "in.raw", "in.opus", "in",
            "in.m4a",
        ];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/audio_decode");
        for case in [
            "aac-ics-242",
            "aac-ics-365",
            "adts-step-zero",
            "timebase-zero",
            "adpcm-unreachable",
        ] {
            let data = std::fs::read(dir.join(format!("panic-{case}")))?;
            let name = NAMES[usize::from(data[0]) % NAMES.len()];
            let e = decode_bytes(&data[1..], name).err();
            assert!(
                matches!(&e, Some(AudioError::Corrupt { reason, .. }) if reason.contains("decoder failed on malformed data") || reason.contains("Ill-formed WAVE")),
                "{case}: {e:?}"
            );
        }
        Ok(())
    }

    /// Found by the `audio_decode` seeds: 64-bit float and IMA/MS ADPCM WAV files written by
    /// sox (`fuzz/corpus/audio_decode/seed-sox-*-wav`, 50 ms of a tone) were "ill-formed" to
    /// hound and never reached symphonia, which reads them.
    #[test]
    fn wav_encodings_hound_calls_malformed_go_to_symphonia() -> TestResult {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/audio_decode");
        for (seed, codec) in [
            ("f64", "pcm_f64le"),
            ("ima", "adpcm_ima_wav"),
            ("ms-adpcm", "adpcm_ms"),
        ] {
            let data = std::fs::read(dir.join(format!("seed-sox-{seed}-wav")))?;
            let audio = decode_bytes(&data[1..], "tone.wav")?;
            assert_eq!(audio.info.codec, codec);
            assert!(audio.info.frames >= 800, "{seed}: {:?}", audio.info);
            let peak = audio.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
            assert!((0.3..0.7).contains(&peak), "{seed}: peak {peak}");
        }
        Ok(())
    }

    #[test]
    fn missing_file_error_names_the_path() {
        let err = decode_file("/no/such/dir/speech.flac").err();
        assert!(matches!(err, Some(AudioError::Io { .. })), "{err:?}");
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("/no/such/dir/speech.flac"), "{msg}");
    }

    #[test]
    fn garbage_is_rejected_clearly() -> TestResult {
        let mut x = 0x1234_5678u32;
        let garbage: Vec<u8> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x >> 24) as u8 & 0x7F // no 0xFF bytes, so no MPEG sync either
            })
            .collect();
        let e = decode_bytes_err("garbage.wav", &garbage)?;
        assert!(
            matches!(e, AudioError::Corrupt { format: "WAV", .. }),
            "{e}"
        );
        let e = decode_bytes_err("garbage.bin", &garbage)?;
        assert!(matches!(e, AudioError::Unsupported { .. }), "{e}");
        assert!(e.to_string().contains("unrecognised"), "{e}");
        let e = decode_bytes_err("garbage.flac", b"fLaC\0\0\0\x22garbage garbage")?;
        assert!(
            matches!(e, AudioError::Corrupt { format: "FLAC", .. }),
            "{e}"
        );
        Ok(())
    }

    #[test]
    fn truncated_wav_header_and_data_are_errors() -> TestResult {
        let wav = valid_wav_bytes(1_000)?;
        let e = decode_bytes_err("short_header.wav", &wav[..20])?;
        assert!(matches!(e, AudioError::Corrupt { .. }), "{e}");
        let e = decode_bytes_err("short_data.wav", &wav[..wav.len() - 500])?;
        assert!(matches!(e, AudioError::Corrupt { .. }), "{e}");
        assert!(e.to_string().contains("truncated"), "{e}");
        Ok(())
    }

    #[test]
    fn empty_files_are_empty_errors() -> TestResult {
        let e = decode_bytes_err("zero_samples.wav", &valid_wav_bytes(0)?)?;
        assert!(matches!(e, AudioError::Empty { .. }), "{e}");
        let e = decode_bytes_err("zero_bytes.wav", &[])?;
        assert!(matches!(e, AudioError::Empty { .. }), "{e}");
        Ok(())
    }

    #[test]
    fn unsupported_formats_say_what_to_do() -> TestResult {
        let e = decode_bytes_err("voice.caf", b"caff\0\x01\0\0desc")?;
        assert!(matches!(e, AudioError::Unsupported { .. }), "{e}");
        assert!(
            e.to_string().contains("CAF containers are not supported"),
            "{e}"
        );
        let e = decode_bytes_err("speech.pcm", &[0u8; 3_200])?;
        assert!(e.to_string().contains("headerless PCM"), "{e}");
        Ok(())
    }

    /// A minimal WAV with a 16-byte `fmt ` chunk (as most writers make it) and `tag`.
    fn wav_with_tag(tag: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut wav = b"RIFF".to_vec();
        wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&tag.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes()); // mono
        wav.extend_from_slice(&rate.to_le_bytes());
        wav.extend_from_slice(&(rate * u32::from(bits) / 8).to_le_bytes()); // byte rate
        wav.extend_from_slice(&(bits / 8).to_le_bytes()); // block align
        wav.extend_from_slice(&bits.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
        wav.extend_from_slice(data);
        wav
    }

    #[test]
    fn g711_wav_decodes() -> TestResult {
        // hound reads neither law, and symphonia wants an 18-byte fmt chunk.
        let dir = tempfile::tempdir()?;
        // Alternating full-scale positive and negative codes: (+max, -max) averages to zero
        // after resampling's low-pass, but the sample count and codec must come through.
        for (tag, codec, pos, neg) in [
            (7u16, "pcm_mulaw", 0x80u8, 0x00u8),
            (6, "pcm_alaw", 0xAA, 0x2A),
        ] {
            let data: Vec<u8> = (0..1_600u32)
                .map(|i| if i < 800 { pos } else { neg })
                .collect();
            let path = dir.path().join(format!("{codec}.wav"));
            File::create(&path)?.write_all(&wav_with_tag(tag, 8_000, 8, &data))?;
            let audio = decode_file(&path)?;
            assert_eq!(audio.info.codec, codec);
            assert_eq!((audio.info.frames, audio.info.sample_rate), (1_600, 8_000));
            assert_eq!(audio.samples.len(), 3_200);
            // First half near +0.98, second half near -0.98 (away from the step's ringing).
            assert!(
                (audio.samples[800] - 0.98).abs() < 0.02,
                "{}",
                audio.samples[800]
            );
            assert!(
                (audio.samples[2_400] + 0.98).abs() < 0.02,
                "{}",
                audio.samples[2_400]
            );
            let cut = &wav_with_tag(tag, 8_000, 8, &data)[..1_000];
            let e = decode_bytes_err(&format!("cut_{codec}.wav"), cut)?;
            assert!(e.to_string().contains("truncated"), "{e}");
        }
        Ok(())
    }

    #[test]
    fn sniffing_table() {
        let cases: [(&[u8], Detected); 13] = [
            (b"RIFF\0\0\0\0WAVEfmt ", Detected::Wav),
            (b"RF64\0\0\0\0WAVEds64", Detected::Rf64),
            (b"fLaC\0\0\0\x22", Detected::Flac),
            (b"ID3\x04\0\0\0\0", Detected::Mp3),
            (&[0xFF, 0xFB, 0x90, 0x64], Detected::Mp3),
            (&[0xFF, 0xF1, 0x50, 0x80], Detected::Adts),
            (b"OggS\0\x02\0\0\0\0\0\0\0\0\x01\x1evorbis", Detected::Ogg),
            (b"FORM\0\0\0\0AIFFCOMM", Detected::Aiff),
            (b"\0\0\0\x20ftypM4A ", Detected::Mp4),
            (b"NIST_1A\n   1024\n", Detected::Sphere),
            (
                b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm",
                Detected::WebM,
            ),
            (
                b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska",
                Detected::Matroska,
            ),
            (b"hello world", Detected::Unknown),
        ];
        for (head, want) in cases {
            assert_eq!(sniff(head), want, "{head:?}");
        }
    }
}

/// Every original file of the shared evaluation set (`../shared/eval` from the workspace root)
/// decodes (Opus included) and matches ffmpeg's 16 kHz mono copy in `wav16k/`. Skips when the
/// folder is absent.
#[cfg(test)]
mod eval_tests {
    use super::*;
    use realfft::RealFftPlanner;
    use std::collections::HashMap;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Largest lag searched when aligning with the reference: 50 ms at 16 kHz.
    const MAX_LAG: usize = 800;

    /// Samples used to find the lag: 2^16, about 4 s.
    const ALIGN_WINDOW: usize = 1 << 16;

    fn eval_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/eval")
    }

    /// Manifest rows by the file name of their `original`, as column-name -> value maps.
    fn manifest(
        dir: &Path,
    ) -> Result<HashMap<String, HashMap<String, String>>, Box<dyn std::error::Error>> {
        let text = std::fs::read_to_string(dir.join("manifest.tsv"))?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().ok_or("empty manifest")?.split('\t').collect();
        let mut rows = HashMap::new();
        for line in lines {
            let row: HashMap<String, String> = header
                .iter()
                .zip(line.split('\t'))
                .map(|(k, v)| ((*k).to_owned(), v.to_owned()))
                .collect();
            let original = row.get("original").cloned().unwrap_or_default();
            if let Some(name) = Path::new(&original).file_name().and_then(|n| n.to_str()) {
                rows.insert(name.to_owned(), row);
            }
        }
        Ok(rows)
    }

    fn read_reference(path: &Path) -> Result<Vec<f32>, Box<dyn std::error::Error>> {
        let mut reader = hound::WavReader::open(path)?;
        let spec = reader.spec();
        if spec.sample_rate != 16_000 || spec.channels != 1 || spec.bits_per_sample != 16 {
            return Err(format!("{}: not 16 kHz mono s16", path.display()).into());
        }
        Ok(reader
            .samples::<i16>()
            .map(|s| s.map(|v| f32::from(v) / 32_768.0))
            .collect::<Result<_, _>>()?)
    }

    /// Lag (samples `a` is late relative to `b`) within ±MAX_LAG that maximises the
    /// cross-correlation, by FFT.
    fn best_lag(a: &[f32], b: &[f32]) -> Result<isize, Box<dyn std::error::Error>> {
        // The first 4 s are plenty to find the lag, and keep the FFT (instantiated in this
        // crate, so unoptimised in debug builds) quick.
        let (a, b) = (
            &a[..a.len().min(ALIGN_WINDOW)],
            &b[..b.len().min(ALIGN_WINDOW)],
        );
        let n = (a.len() + b.len() + 1).next_power_of_two();
        let mut planner = RealFftPlanner::<f64>::new();
        let fwd = planner.plan_fft_forward(n);
        let inv = planner.plan_fft_inverse(n);
        let spectrum = |x: &[f32]| -> Result<
            Vec<realfft::num_complex::Complex<f64>>,
            Box<dyn std::error::Error>,
        > {
            let mut buf = vec![0.0f64; n];
            for (d, s) in buf.iter_mut().zip(x) {
                *d = f64::from(*s);
            }
            let mut out = fwd.make_output_vec();
            fwd.process(&mut buf, &mut out)?;
            Ok(out)
        };
        let (fa, fb) = (spectrum(a)?, spectrum(b)?);
        let mut prod: Vec<_> = fa.iter().zip(&fb).map(|(x, y)| x * y.conj()).collect();
        // The DC and Nyquist bins of a real signal's spectrum must be real.
        for i in [0, prod.len() - 1] {
            prod[i].im = 0.0;
        }
        let mut corr = inv.make_output_vec();
        inv.process(&mut prod, &mut corr)?;
        // corr[k] = sum a[i + k] b[i]; negative k wraps to the end.
        let at = |lag: isize| corr[lag.rem_euclid(n as isize) as usize];
        let max = MAX_LAG as isize;
        Ok((-max..=max)
            .max_by(|&x, &y| at(x).total_cmp(&at(y)))
            .unwrap_or(0))
    }

    /// Pearson correlation of `a[i + lag]` with `b[i]` over their overlap.
    fn correlation(a: &[f32], b: &[f32], lag: isize) -> f64 {
        let pairs = b.iter().enumerate().filter_map(|(i, &y)| {
            let j = i as isize + lag;
            (j >= 0).then(|| a.get(j as usize).map(|&x| (f64::from(x), f64::from(y))))?
        });
        let (mut n, mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for (x, y) in pairs {
            n += 1.0;
            sx += x;
            sy += y;
            sxx += x * x;
            syy += y * y;
            sxy += x * y;
        }
        let cov = sxy - sx * sy / n;
        let var = (sxx - sx * sx / n) * (syy - sy * sy / n);
        if var <= 0.0 { 0.0 } else { cov / var.sqrt() }
    }

    #[test]
    fn eval_originals_decode_and_match_ffmpeg_references() -> TestResult {
        let dir = eval_dir();
        if !dir.join("orig").is_dir() {
            eprintln!("skipped: {} is absent", dir.display());
            return Ok(());
        }
        let rows = manifest(&dir)?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("orig"))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        let mut failures = Vec::new();
        println!(
            "{:<40} {:<34} {:<18} {:>8} {:>8} {:>5} {:>8} {:>12}",
            "file",
            "manifest format",
            "decoded as",
            "len",
            "ref len",
            "lag",
            "corr",
            "decode/align"
        );
        for path in &files {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("?")
                .to_owned();
            let row = rows.get(&name);
            let format = row
                .and_then(|r| r.get("original_format"))
                .map_or("-", |s| s.as_str());
            let started = std::time::Instant::now();
            let decoded = decode_file(path);
            let decode_ms = started.elapsed().as_millis();
            let audio = match decoded {
                Ok(a) => a,
                Err(e) => {
                    println!("{name:<40} {format:<34} error: {e}");
                    failures.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let decoded_as = format!("{}/{}", audio.info.container, audio.info.codec);
            let Some(reference) = row
                .and_then(|r| r.get("wav16k"))
                .filter(|w| !w.is_empty())
                .map(|w| dir.join(w))
            else {
                println!(
                    "{name:<40} {format:<34} {decoded_as:<18} {:>8}   (no reference)",
                    audio.samples.len()
                );
                continue;
            };
            let want = read_reference(&reference)?;
            let started = std::time::Instant::now();
            let lag = best_lag(&audio.samples, &want)?;
            let align_ms = started.elapsed().as_millis();
            let corr = correlation(&audio.samples, &want, lag);
            let one_channel = row
                .and_then(|r| r.get("note"))
                .is_some_and(|n| n.contains("channel only"));
            println!(
                "{name:<40} {format:<34} {decoded_as:<18} {:>8} {:>8} {lag:>5} {corr:>8.5} {:>5}/{:<3} ms{}",
                audio.samples.len(),
                want.len(),
                decode_ms,
                align_ms,
                if one_channel {
                    "  (reference is one channel: not gated)"
                } else {
                    ""
                }
            );
            let len_diff = audio.samples.len().abs_diff(want.len());
            if len_diff > MAX_LAG.max(want.len() / 100) {
                failures.push(format!(
                    "{name}: length {} vs reference {}",
                    audio.samples.len(),
                    want.len()
                ));
            }
            // ffmpeg made the references with its own Opus decoder, not libopus; the two
            // differ slightly at low bit rates (0.987 measured on the 2.9 s LDC93S1 clip).
            let min_corr = if audio.info.codec == "opus" {
                0.98
            } else {
                0.99
            };
            if !one_channel && corr < min_corr {
                failures.push(format!("{name}: correlation {corr:.4} at lag {lag}"));
            }
        }
        assert!(
            failures.is_empty(),
            "eval mismatches:\n{}",
            failures.join("\n")
        );
        Ok(())
    }

    /// Real FLAC and AIFF files cut to 60 % (in a temporary directory) are reported as
    /// truncated: both formats declare their length.
    #[test]
    fn eval_truncated_lossless_files_are_errors() -> TestResult {
        let dir = eval_dir().join("orig");
        if !dir.is_dir() {
            eprintln!("skipped: {} is absent", dir.display());
            return Ok(());
        }
        let tmp = tempfile::tempdir()?;
        for name in ["ls_dev_2412-153948-0001.flac", "sr_french.aiff"] {
            let Ok(bytes) = std::fs::read(dir.join(name)) else {
                eprintln!("skipped {name}: absent");
                continue;
            };
            let cut = tmp.path().join(format!("cut_{name}"));
            std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10])?;
            let err = decode_file(&cut).err();
            println!("{name} cut to 60 %: {err:?}");
            assert!(
                matches!(&err, Some(AudioError::Corrupt { reason, .. }) if reason.contains("truncated")),
                "{name}: {err:?}"
            );
        }
        Ok(())
    }
}
