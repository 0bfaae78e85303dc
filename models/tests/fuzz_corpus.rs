//! Replays the committed fuzz corpus `fuzz/corpus/ct2_import/` through the CTranslate2 importer, with the
//! same harness the `ct2_import` fuzz target runs (`fuzz/harness/ct2.rs`), so every input the
//! fuzzer kept (seeds, coverage finds, fixed crashes) stays a regression test on stable Rust.

#[path = "../../fuzz/harness/ct2.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../../fuzz/harness/input.rs"]
#[allow(dead_code)]
mod input;

use std::path::Path;

#[test]
fn fuzz_corpus_replays_cleanly() -> Result<(), Box<dyn std::error::Error>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ct2_import");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    for file in &files {
        let data = std::fs::read(file)?;
        // A panic names the input; `cargo +nightly fuzz run ct2_import <file>` reproduces it.
        eprintln!("{}", file.display());
        let outcome = harness::run(&data);
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        println!("{name:<48} {} bytes: {outcome}", data.len());
    }
    println!("{} inputs replayed", files.len());
    Ok(())
}
