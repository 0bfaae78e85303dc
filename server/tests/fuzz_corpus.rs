//! Replays the committed fuzz corpus `fuzz/corpus/ingest/` through StreamingRecognize ingest, with the
//! same harness the `ingest` fuzz target runs (`fuzz/harness/ingest.rs`), so every input the
//! fuzzer kept (seeds, coverage finds, fixed crashes) stays a regression test on stable Rust.

#[path = "../../fuzz/harness/ingest.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../../fuzz/harness/input.rs"]
#[allow(dead_code)]
mod input;

use std::path::Path;

#[test]
fn fuzz_corpus_replays_cleanly() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ingest");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    for file in &files {
        let data = std::fs::read(file)?;
        // A panic names the input; `cargo +nightly fuzz run ingest <file>` reproduces it.
        eprintln!("{}", file.display());
        let outcome = harness::run(&data);
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        println!("{name:<48} {} bytes: {outcome}", data.len());
    }
    println!("{} inputs replayed", files.len());
    Ok(())
}
