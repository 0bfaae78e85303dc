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
    input::replay_corpus(&dir, "ingest", harness::run)
}
