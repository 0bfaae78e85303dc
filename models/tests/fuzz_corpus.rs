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
    input::replay_corpus(&dir, "ct2_import", harness::run)
}
