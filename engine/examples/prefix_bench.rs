//! What decoding after a prefix saves on streaming partials (BENCHMARKS.md "Prefix
//! decoding"). For each WAV (its first 30 s), partials are simulated as the streaming policy
//! makes them: the audio so far, every `--step-ms` (500) from `--min-ms` (1000). Each is
//! decoded twice with [`GreedyDecoder`]: whole (as today: every token generated again), and
//! after a prefix of the tokens the two previous whole decodes agreed on (LocalAgreement-2,
//! what the policy commits). Reports decoder calls, decoder time (the mel and encoder pass,
//! the same for both, apart) and how often the two texts are the same.
//!
//! ```text
//! cargo run --release -p transcribe-engine --example prefix_bench -- MODEL_PATH WAV... \
//!     [--threads N] [--step-ms MS] [--min-ms MS] [--language CODE]
//! ```

use std::error::Error;
use std::path::PathBuf;

use transcribe_core::audio::{SAMPLE_RATE, WINDOW_SAMPLES};
use transcribe_engine::greedy::GreedyDecoder;
use transcribe_engine::{EngineConfig, WhisperModel};

#[derive(Default)]
struct Totals {
    partials: usize,
    same_text: usize,
    calls_whole: usize,
    calls_prefixed: usize,
    ms_whole: f64,
    ms_prefixed: f64,
    encoder_ms: f64,
    prefix_tokens: usize,
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut positional = Vec::new();
    let (mut threads, mut step_ms, mut min_ms) = (1usize, 500usize, 1000usize);
    let mut language = "en".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--threads" => threads = value()?.parse()?,
            "--step-ms" => step_ms = value()?.parse()?,
            "--min-ms" => min_ms = value()?.parse()?,
            "--language" => language = value()?,
            _ if a.starts_with("--") => return Err(format!("unknown option {a}").into()),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    if positional.len() < 2 || threads == 0 || step_ms == 0 {
        return Err(
            "usage: prefix_bench MODEL_PATH WAV... [--threads N] [--step-ms MS] \
                    [--min-ms MS] [--language CODE]"
                .into(),
        );
    }
    let config = EngineConfig {
        threads,
        use_gpu: false,
        ..EngineConfig::default()
    };
    let model = WhisperModel::load(&positional[0], &config)?;
    let mut greedy = GreedyDecoder::new(&model)?;
    let mut all = Totals::default();
    println!(
        "| file | partials | same text | decoder calls whole / prefixed | decoder ms whole / prefixed | encoder ms | prefix tokens, mean |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for wav in &positional[1..] {
        let mut samples = transcribe_audio::decode_file(wav)?.samples;
        samples.truncate(WINDOW_SAMPLES);
        let mut t = Totals::default();
        let mut history: Vec<Vec<i32>> = Vec::new();
        let per_ms = SAMPLE_RATE as usize / 1000;
        let mut end = min_ms * per_ms;
        while end <= samples.len() {
            let audio = &samples[..end];
            let whole = greedy.decode(audio, Some(&language), &[], 0)?;
            let ms_whole = whole.decode_time.as_secs_f64() * 1e3;
            // LocalAgreement-2: the tokens the two previous decodes agree on.
            let prefix: Vec<i32> = match history.as_slice() {
                [.., a, b] => a
                    .iter()
                    .zip(b)
                    .take_while(|(x, y)| x == y)
                    .map(|(x, _)| *x)
                    .collect(),
                _ => Vec::new(),
            };
            let prefixed = greedy.decode(audio, Some(&language), &prefix, 0)?;
            let ms_prefixed = prefixed.decode_time.as_secs_f64() * 1e3;
            t.encoder_ms += (whole.encode_time + prefixed.encode_time).as_secs_f64() * 1e3 / 2.0;
            t.partials += 1;
            t.same_text += usize::from(prefixed.text == whole.text);
            t.calls_whole += whole.decoder_calls;
            t.calls_prefixed += prefixed.decoder_calls;
            t.ms_whole += ms_whole;
            t.ms_prefixed += ms_prefixed;
            t.prefix_tokens += prefix.len();
            history.push(whole.generated);
            end += step_ms * per_ms;
        }
        row(&wav.file_name().unwrap_or_default().to_string_lossy(), &t);
        all.partials += t.partials;
        all.same_text += t.same_text;
        all.calls_whole += t.calls_whole;
        all.calls_prefixed += t.calls_prefixed;
        all.ms_whole += t.ms_whole;
        all.ms_prefixed += t.ms_prefixed;
        all.prefix_tokens += t.prefix_tokens;
        all.encoder_ms += t.encoder_ms;
    }
    row("**all**", &all);
    println!(
        "decoder calls {:.2}x fewer, decoder time {:.2}x less with the prefix ({} threads, step {step_ms} ms)",
        all.calls_whole as f64 / all.calls_prefixed.max(1) as f64,
        all.ms_whole / all.ms_prefixed.max(1e-9),
        threads
    );
    Ok(())
}

fn row(name: &str, t: &Totals) {
    println!(
        "| {name} | {} | {} | {} / {} | {:.0} / {:.0} | {:.0} | {:.1} |",
        t.partials,
        t.same_text,
        t.calls_whole,
        t.calls_prefixed,
        t.ms_whole,
        t.ms_prefixed,
        t.encoder_ms,
        t.prefix_tokens as f64 / t.partials.max(1) as f64
    );
}
