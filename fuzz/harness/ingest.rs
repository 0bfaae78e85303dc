//! Fuzz harness for streaming request ingest: an arbitrary `AudioFormat` (any encoding
//! value, rate and channel count) through `RawFormat::from_proto`, then arbitrary byte chunks
//! through `Ingest::push` and `Ingest::finish`, as `StreamingRecognize` feeds them. Shared by
//! `fuzz_targets/ingest.rs` and the replay test `server/tests/fuzz_corpus.rs`.

use transcribe_proto::v1::AudioFormat;
use transcribe_server::RequestError;
use transcribe_server::ingest::{Ingest, RawFormat};

use crate::input::Input;

/// Largest chunk a case sends (the server's default limit is larger; chunks above
/// `max_chunk_bytes` are part of what is tested).
const MAX_CHUNK: usize = 4_096;

/// Runs one case; panics if an invariant breaks.
///
/// Invariants: no panic, no hang; every rejection is `InvalidArgument` (a client error,
/// INVALID_ARGUMENT on the wire) naming a field; the output is finite and about as long
/// as the input's duration at 16 kHz.
///
/// Returns the outcome in words, for the replay test's table.
pub fn run(data: &[u8]) -> String {
    let mut input = Input::new(data);
    // Mostly plausible formats, sometimes anything at all.
    let wild = input.u8();
    let format = if wild & 0x80 != 0 {
        AudioFormat {
            encoding: input.i32(),
            sample_rate_hertz: input.i32(),
            audio_channel_count: input.i32(),
        }
    } else {
        const RATES: [i32; 8] = [8_000, 11_025, 16_000, 22_050, 44_100, 48_000, 7_999, 48_001];
        AudioFormat {
            encoding: i32::from(wild & 0x0F),
            sample_rate_hertz: RATES[usize::from(input.u8()) % RATES.len()],
            audio_channel_count: i32::from(input.u8() % 10),
        }
    };
    let present = input.u8() != 0xFF;
    let format = match RawFormat::from_proto(present.then_some(&format), "config.audio_format") {
        Ok(f) => f,
        Err(e) => return check_invalid(&e),
    };
    let max_chunk = usize::from(input.u16() % 4_100);
    let mut ingest = match Ingest::new(format, max_chunk) {
        Ok(i) => i,
        Err(e) => return check_invalid(&e),
    };
    let mut out = 0usize;
    let mut frames_in = 0u64;
    while !input.is_empty() {
        let len = usize::from(input.u16()) % (MAX_CHUNK + 1);
        let chunk = input.bytes(len);
        match ingest.push(chunk) {
            Ok(samples) => {
                assert!(samples.iter().all(|s| s.is_finite()), "non-finite samples");
                out += samples.len();
                frames_in += (chunk.len() / format.frame_bytes()) as u64;
            }
            // A stream ends at its first bad chunk.
            Err(e) => return check_invalid(&e),
        }
    }
    let tail = ingest.finish();
    assert!(tail.iter().all(|s| s.is_finite()), "non-finite samples");
    out += tail.len();
    // Resampling keeps the duration: 16 kHz output within a few samples of the input's.
    let want = frames_in * 16_000 / u64::from(format.sample_rate);
    assert!(
        (out as u64).abs_diff(want) <= 2,
        "{frames_in} frames at {} Hz gave {out} samples, want about {want}",
        format.sample_rate
    );
    format!(
        "ok: {frames_in} frames at {} Hz -> {out} samples",
        format.sample_rate
    )
}

fn check_invalid(e: &RequestError) -> String {
    match e {
        RequestError::InvalidArgument { field, description } => {
            assert!(!field.is_empty() && !description.is_empty(), "{e:?}");
            format!("INVALID_ARGUMENT {field}: {description}")
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}
