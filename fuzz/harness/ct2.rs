//! Fuzz harness for the CTranslate2 importer: an input is a whole export directory
//! (`model.bin`, `config.json`, the vocabulary) packed into one byte string, written to a
//! temporary directory and run through `transcribe_models::import_ct2`, the same call
//! `transcribe models import` makes; `model.bin` is also indexed from memory
//! (`Ct2Model::from_reader`) and every variable read back. Shared by
//! `fuzz_targets/ct2_import.rs` and the replay test `models/tests/fuzz_corpus.rs`.

use std::io::Cursor;
use std::path::Path;

use transcribe_models::ModelError;
use transcribe_models::ct2::Ct2Model;

/// Separates the parts of an input: `model.bin`, `config.json`, the vocabulary.
pub const SEPARATOR: &[u8] = b"\n--ct2-fuzz--\n";

/// Splits an input into up to three parts on [`SEPARATOR`].
fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() < 2 {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    parts
}

/// Imports the export packed in `data`; panics if an invariant breaks.
///
/// Invariants: no panic, no hang, no allocation beyond the fuzzer's limit; every error is
/// a [`ModelError`] that names the file it is about; a successful import writes a ggml file
/// that `inspect_ggml` reads back with the reported hyper-parameters.
///
/// Returns the outcome in words, for the replay test's table.
pub fn run(data: &[u8]) -> String {
    let parts = split(data);
    let model = parts[0];
    let config = parts.get(1).copied().filter(|c| !c.is_empty());
    let vocabulary = parts.get(2).copied().filter(|v| !v.is_empty());

    // The reader on its own, from memory: index, then read every variable back.
    let name = Path::new("fuzz/model.bin");
    if let Ok(mut m) = Ct2Model::from_reader(Cursor::new(model), name) {
        let names: Vec<String> = m.variables().map(|v| v.name.clone()).collect();
        for n in &names {
            let _ = m.read_f32(n);
            let _ = m.read_f16(n);
            let _ = m.scalar_int(n);
        }
        let _ = m.quantized_variable();
        let _ = transcribe_models::ggml::ct2_hparams(&mut m);
    }

    // The importer on the directory.
    let Ok(dir) = tempfile::tempdir() else {
        return "no temporary directory".into();
    };
    let write = |file: &str, bytes: &[u8]| std::fs::write(dir.path().join(file), bytes);
    if write("model.bin", model).is_err() {
        return "cannot write model.bin".into();
    }
    if let Some(c) = config {
        let _ = write("config.json", c);
    }
    if let Some(v) = vocabulary {
        let file = if v.first() == Some(&b'[') {
            "vocabulary.json"
        } else {
            "vocabulary.txt"
        };
        let _ = write(file, v);
    }
    let out = dir.path().join("out/ggml-model.bin");
    match transcribe_models::import_ct2(dir.path(), &out) {
        Ok(report) => {
            let summary = transcribe_models::ggml::inspect_ggml(&out)
                .unwrap_or_else(|e| panic!("imported file does not read back: {e}"));
            assert_eq!(summary.hparams, report.hparams);
            format!("ok: {} tensors, {} bytes", report.tensors, report.bytes)
        }
        Err(e) => {
            if !matches!(e, ModelError::Io { .. }) {
                let msg = e.to_string();
                assert!(
                    msg.contains(&*dir.path().to_string_lossy()),
                    "error does not name the file: {msg}"
                );
            }
            assert!(!out.exists(), "a failed import left {}", out.display());
            e.to_string().replace(&*dir.path().to_string_lossy(), "DIR")
        }
    }
}
