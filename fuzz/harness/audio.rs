//! Fuzz harness for file decoding: `transcribe_audio::decode_bytes` on arbitrary bytes under
//! an arbitrary file name (the extension is a format hint). Shared by `fuzz_targets/audio_decode.rs`
//! and the corpus replay test `audio/tests/fuzz_corpus.rs`.

use transcribe_audio::{AudioError, decode_bytes};

/// File names the first input byte picks from: every extension `decode_bytes` treats
/// specially, plus none.
pub const NAMES: [&str; 10] = [
    "in.wav", "in.mp3", "in.aac", "in.flac", "in.ogg", "in.sph", "in.raw", "in.opus", "in",
    "in.m4a",
];

/// Decodes `data[1..]` named by `data[0]`; panics if an invariant breaks.
///
/// Invariants: no panic, no hang (the fuzzer's timeout); on success at least one source frame,
/// a positive rate and channel count, and only finite samples; on failure an error whose
/// message names the file.
///
/// Returns the outcome in words, for the replay test's table.
pub fn run(data: &[u8]) -> String {
    let Some((&pick, bytes)) = data.split_first() else {
        return "no input".into();
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    match decode_bytes(bytes, name) {
        Ok(audio) => {
            assert!(audio.info.frames > 0, "{:?}", audio.info);
            assert!(audio.info.sample_rate > 0 && audio.info.channels > 0);
            assert!(
                audio.samples.iter().all(|s| s.is_finite()),
                "non-finite output from {:?}",
                audio.info
            );
            format!(
                "ok: {}/{} {} Hz {} ch, {} frames",
                audio.info.container,
                audio.info.codec,
                audio.info.sample_rate,
                audio.info.channels,
                audio.info.frames
            )
        }
        Err(e) => {
            assert!(
                !matches!(e, AudioError::Io { .. }),
                "I/O error from memory: {e}"
            );
            let msg = e.to_string();
            assert!(msg.contains(name), "error does not name the file: {msg}");
            msg
        }
    }
}
