//! Replays the committed fuzz corpus `fuzz/corpus/audio_decode/` through transcribe_audio::decode_bytes, with the
//! same harness the `audio_decode` fuzz target runs (`fuzz/harness/audio.rs`), so every input the
//! fuzzer kept (seeds, coverage finds, fixed crashes) stays a regression test on stable Rust.

#[path = "../../fuzz/harness/audio.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../../fuzz/harness/input.rs"]
#[allow(dead_code)]
mod input;

use std::path::Path;
use std::sync::Mutex;

/// Where panics happened while decoding the current input, caught ones included: the decoder
/// catches symphonia's panics on malformed files and reports them as errors.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[test]
fn fuzz_corpus_replays_cleanly() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/audio_decode");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let (Ok(mut p), Some(l)) = (PANICS.lock(), info.location()) {
            let (crate_dir, file) = l.file().rsplit_once("/src/").unwrap_or(("", l.file()));
            let krate = crate_dir.rsplit('/').next().unwrap_or_default();
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            p.push(format!("{krate} {file}:{}: {message}", l.line()));
        } else {
            default_hook(info);
        }
    }));
    for file in &files {
        let data = std::fs::read(file)?;
        // A panic names the input; `cargo +nightly fuzz run audio_decode <file>` reproduces it.
        eprintln!("{}", file.display());
        let mut outcome = harness::run(&data);
        if let Ok(mut p) = PANICS.lock() {
            if !p.is_empty() {
                outcome = format!("{outcome} [caught panic: {}]", p.join("; "));
            }
            p.clear();
        }
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        println!("{name:<48} {} bytes: {outcome}", data.len());
    }
    println!("{} inputs replayed", files.len());
    Ok(())
}
