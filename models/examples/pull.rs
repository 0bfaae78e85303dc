//! Resolves models the way the CLI does and prints what was found.
//!
//! `cargo run -p transcribe-models --example pull -- tiny.en base`
//! (`TRANSCRIBE_MODEL_DIR` picks the cache; `TRANSCRIBE_OFFLINE=1` stays off the network).

use std::sync::Arc;

use transcribe_models::ggml::inspect_ggml;
use transcribe_models::{FetchEvent, FetchOptions, ModelSpec, resolve};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let opts = FetchOptions {
        progress: true,
        on_event: Some(Arc::new(|e: &FetchEvent| match e {
            FetchEvent::Progress { .. } => {}
            other => eprintln!("{other:?}"),
        })),
        ..Default::default()
    };
    for arg in std::env::args().skip(1) {
        let spec: ModelSpec = arg.parse()?;
        let t = std::time::Instant::now();
        let path = resolve(&spec, &opts)?;
        let s = inspect_ggml(&path)?;
        println!(
            "{spec}: {} ({} bytes, {} tensors, n_vocab {}, {} tokens, {:.1} s)",
            path.display(),
            s.bytes,
            s.tensors.len(),
            s.hparams.n_vocab,
            s.vocab.len(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
