//! Does a model keep streaming real-time on this machine? Streams a WAV file through the
//! streaming policy with the real whisper engine, on the policy's sample clock.
//!
//! ```text
//! cargo run --release -p transcribe-engine --example stream_sim -- MODEL_PATH WAV \
//!     [--threads N] [--chunk-ms MS] [--language CODE] [--reference TXT] [--json OUT]
//!     [--verbose] [--no-offline] [--step-ms MS] [--max-step-ms MS] [--min-partial-ms MS]
//!     [--final-context full|fit] [--partial-context fit|wide|full] [--speed F] [--gpu]
//!     [--flash-attn on|off] [--min-commit-ms MS] [--endpoint-ms MS] [--audio-ctx-floor FRAMES]
//!     [--audio-ctx-margin FRAMES] [--partial-prefix on|off] [--partial-token-limit on|off]
//!     [--partial-stop-restated on|off]
//! ```
//!
//! `--step-ms`, `--max-step-ms` and `--min-partial-ms` set the policy's partial step, its
//! widest step and the audio before the first partial (the server's `--step` and
//! `--min-partial`); `scripts/bench`'s `sweep` section steps the first to find the lowest
//! emission latency that keeps up. `--gpu` starts from a GPU build's policy
//! (`PolicyConfig::for_device(true)`: 0.25 s step, first partial at 0.5 s, commits from 3 s
//! of audio) instead of the CPU's; `--min-commit-ms` sets the audio a partial must cover
//! before its words are committed; `--endpoint-ms` the silence that ends an utterance (the
//! server's `--endpoint-silence`). `--partial-context fit|wide|full` is the server's flag
//! (default `fit`); `--audio-ctx-floor` and `--audio-ctx-margin` then set the partial
//! context's floor and margin in encoder frames of 20 ms (the policy's `audio_ctx_floor`,
//! `audio_ctx_margin`). `--flash-attn on` decodes with flash attention, as GPU builds do
//! (default off, as CPU builds): its rounding tips near-ties in partials (and, before the
//! vendored whisper.cpp masked its padding, leftovers of earlier decodes changed them), so
//! simulated GPU latencies should use it. `--partial-prefix on` decodes partials after their utterance's
//! committed words (the policy's `partial_prefix`, the server's `--partial-prefix`); the
//! report's `partial_decoder_steps` and `partial_decoder_batched_tokens` (and the finals')
//! count the decoder calls it saves: single-token steps, and tokens fed in batched calls.
//! `--partial-token-limit off` lets partials decode up to whisper.cpp's own limit instead of
//! the policy's `partial_token_limit` (a loop then runs to 220 tokens);
//! `--partial-stop-restated off` lets a partial decode on after its text restated itself
//! (the policy's `stop_restated_partials`).
//! `--speed F` charges each decode its measured time divided by F on the sample clock: a
//! model of a device F times faster than this one (a GPU), to try its policy settings here
//! before measuring them there. Compute load and decode times are reported as charged.
//! The emission measure is strict (a word counts at its final position only), so a partial
//! missing one early word makes every later word of it count as unseen. `word_shown` is
//! `stream_bench`'s measure instead (`transcribe_core::latency`: the text shown, finals then
//! the interim, aligned with the finals' words), the one to report.
//!
//! `scripts/bench` runs it per clip for the streaming WER of its accuracy section
//! (`--no-offline`: the offline text comes from `transcribe` there).
//!
//! How: [`run_stream_timed`] asks for a job's cost (in samples) before it asks the
//! transcriber for the result. The cost closure therefore runs the real decode itself,
//! times it and stashes the result; the cost handed back is the measured wall time × 16 000,
//! so the driver pushes as much audio as would have arrived in real time while the decode
//! ran (step widening, finals queued behind partials: all as on a live stream with one
//! worker). A small [`Transcriber`] then hands the stashed result back (at most one job is in
//! flight, so a FIFO matches them).
//!
//! Reports: compute load (decode wall time / audio duration), partial and final jobs, decode
//! time mean / p95, final latency (utterance end to its final result, and endpoint detection
//! to final; finals cut at the maximum utterance length are counted apart, not timed), emission latency (a word's end in the audio to the first interim that shows
//! it, and to the first that commits it), the step actually used between partials (step
//! widening), and the streaming WER against the reference (`<WAV stem>.txt` beside the WAV
//! unless `--reference`), next to the offline WER of one whole-file decode with the same
//! model.
//!
//! Times on the sample clock: a job's result counts as arrived at `max(polled, previous
//! result) + measured cost`, so results after the end of the audio (the last utterance's
//! final) carry their real decode time too.

use std::collections::VecDeque;
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use transcribe_core::audio::{SAMPLE_RATE, samples_to_seconds};
use transcribe_core::latency::{RefWord, ShownText, first_appearances, tokens};
use transcribe_core::policy::{
    EndReason, FinalContext, JobKind, PartialContext, PolicyConfig, PolicyEvent,
};
use transcribe_core::stream::run_stream_timed;
use transcribe_core::text::{normalize, wer};
use transcribe_core::{DecodeOptions, EngineError, Transcriber, Transcript};
use transcribe_engine::{EngineConfig, WhisperModel};

type Stash = Arc<Mutex<VecDeque<(usize, Result<Transcript, EngineError>)>>>;

/// Hands back results the cost closure already computed, in order.
struct Stashed(Stash);

impl Transcriber for Stashed {
    fn transcribe(
        &mut self,
        samples: &[f32],
        _options: &DecodeOptions,
    ) -> Result<Transcript, EngineError> {
        let next = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front();
        match next {
            Some((len, result)) if len == samples.len() => result,
            Some((len, _)) => Err(EngineError::Inference(format!(
                "stash out of step: {len} samples decoded, {} asked",
                samples.len()
            ))),
            None => Err(EngineError::Inference("no stashed result".into())),
        }
    }
}

/// One decode as measured.
struct Cost {
    id: u64,
    kind: JobKind,
    wall_s: f64,
    /// Decoder calls of this decode: single-token steps, tokens of batched calls.
    steps: i64,
    batched_tokens: i64,
}

struct Args {
    model: PathBuf,
    wav: PathBuf,
    threads: usize,
    chunk_ms: u32,
    language: Option<String>,
    reference: Option<PathBuf>,
    json: Option<PathBuf>,
    verbose: bool,
    /// Skip the whole-file offline decode (its WER and RTF are reported as NaN / null):
    /// `scripts/bench` gets the offline text from `transcribe` itself.
    no_offline: bool,
    /// Policy overrides (milliseconds); `None` keeps [`PolicyConfig::default`]'s.
    step_ms: Option<u32>,
    max_step_ms: Option<u32>,
    min_partial_ms: Option<u32>,
    min_commit_ms: Option<u32>,
    endpoint_ms: Option<u32>,
    /// Start from the GPU policy (`PolicyConfig::for_device(true)`).
    gpu: bool,
    /// Fit finals' encoder context (`FinalContext::Fit`) instead of the full window.
    final_fit: bool,
    /// `--partial-context fit|wide|full`.
    partial_context: Option<PartialContext>,
    /// `--partial-prefix on`: partials decode after their committed words.
    partial_prefix: bool,
    /// `--partial-token-limit off`: partials decode up to whisper.cpp's limit (the policy's
    /// `limit_partial_tokens`, default on).
    partial_token_limit: bool,
    /// `--partial-stop-restated off`: partials decode on after restating themselves (the
    /// policy's `stop_restated_partials`, default on).
    partial_stop_restated: bool,
    /// Partial context overrides, in encoder frames.
    audio_ctx_floor: Option<u32>,
    audio_ctx_margin: Option<u32>,
    /// Decode times are divided by this on the sample clock (a faster device). Default 1.
    speed: f64,
    /// `--flash-attn on|off` (default off, as CPU builds): GPU builds decode with it on.
    flash_attn: bool,
}

const USAGE: &str = "usage: stream_sim MODEL_PATH WAV [--threads N] [--chunk-ms MS] \
                     [--language CODE] [--reference TXT] [--json OUT] [--verbose] [--no-offline] \
                     [--step-ms MS] [--max-step-ms MS] [--min-partial-ms MS] \
                     [--final-context full|fit] [--partial-context fit|wide|full] [--speed F] \
                     [--gpu] [--flash-attn on|off] [--partial-prefix on|off] \
                     [--partial-token-limit on|off] [--partial-stop-restated on|off] \
                     [--min-commit-ms MS] [--endpoint-ms MS] [--audio-ctx-floor FRAMES] \
                     [--audio-ctx-margin FRAMES]";

/// A two-valued flag: false for `off`, true for `on`, an error naming `flag` otherwise.
fn either(flag: &str, value: &str, off: &str, on: &str) -> Result<bool, Box<dyn Error>> {
    match value {
        v if v == off => Ok(false),
        v if v == on => Ok(true),
        other => Err(format!("{flag}: {off} or {on}, not {other}").into()),
    }
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let mut positional = Vec::new();
    let mut args = Args {
        model: PathBuf::new(),
        wav: PathBuf::new(),
        threads: 1,
        chunk_ms: 100,
        language: None,
        reference: None,
        json: None,
        verbose: false,
        no_offline: false,
        step_ms: None,
        max_step_ms: None,
        min_partial_ms: None,
        min_commit_ms: None,
        endpoint_ms: None,
        gpu: false,
        final_fit: false,
        partial_context: None,
        partial_prefix: false,
        partial_token_limit: true,
        partial_stop_restated: true,
        audio_ctx_floor: None,
        audio_ctx_margin: None,
        speed: 1.0,
        flash_attn: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--threads" => args.threads = value()?.parse()?,
            "--chunk-ms" => args.chunk_ms = value()?.parse()?,
            "--language" => args.language = Some(value()?),
            "--reference" => args.reference = Some(value()?.into()),
            "--json" => args.json = Some(value()?.into()),
            "-v" | "--verbose" => args.verbose = true,
            "--no-offline" => args.no_offline = true,
            "--step-ms" => args.step_ms = Some(value()?.parse()?),
            "--max-step-ms" => args.max_step_ms = Some(value()?.parse()?),
            "--min-partial-ms" => args.min_partial_ms = Some(value()?.parse()?),
            "--min-commit-ms" => args.min_commit_ms = Some(value()?.parse()?),
            "--endpoint-ms" => args.endpoint_ms = Some(value()?.parse()?),
            "--audio-ctx-floor" => args.audio_ctx_floor = Some(value()?.parse()?),
            "--audio-ctx-margin" => args.audio_ctx_margin = Some(value()?.parse()?),
            "--gpu" => args.gpu = true,
            "--speed" => args.speed = value()?.parse()?,
            "--partial-context" => {
                args.partial_context = Some(match value()?.as_str() {
                    "fit" => PartialContext::Fit,
                    "wide" => PartialContext::Wide,
                    "full" => PartialContext::Full,
                    other => return Err(format!("{a}: fit, wide or full, not {other}").into()),
                });
            }
            "--final-context" => args.final_fit = either(&a, &value()?, "full", "fit")?,
            "--flash-attn" => args.flash_attn = either(&a, &value()?, "off", "on")?,
            "--partial-prefix" => args.partial_prefix = either(&a, &value()?, "off", "on")?,
            "--partial-token-limit" => {
                args.partial_token_limit = either(&a, &value()?, "off", "on")?;
            }
            "--partial-stop-restated" => {
                args.partial_stop_restated = either(&a, &value()?, "off", "on")?;
            }
            "-h" | "--help" => return Err(USAGE.into()),
            _ if a.starts_with("--") => return Err(format!("unknown option {a}\n{USAGE}").into()),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [model, wav] = <[PathBuf; 2]>::try_from(positional).map_err(|_| USAGE)?;
    if args.threads == 0 || args.chunk_ms == 0 {
        return Err("--threads and --chunk-ms must be at least 1".into());
    }
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err("--speed must be a positive number".into());
    }
    args.model = model;
    args.wav = wav;
    Ok(args)
}

/// Reads a 16 kHz PCM WAV (8/16/24/32-bit integer or 32-bit float, any channel count,
/// downmixed by averaging).
fn read_wav(path: &Path) -> Result<Vec<f32>, Box<dyn Error>> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(format!("{}: not a RIFF/WAVE file", path.display()).into());
    }
    let (mut format, mut channels, mut rate, mut bits) = (0u16, 0u16, 0u32, 0u16);
    let mut pos = 12;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let body = &bytes[pos + 8..(pos + 8 + size).min(bytes.len())];
        if id == b"fmt " && body.len() >= 16 {
            format = u16::from_le_bytes([body[0], body[1]]);
            channels = u16::from_le_bytes([body[2], body[3]]);
            rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            bits = u16::from_le_bytes([body[14], body[15]]);
            if format == 0xFFFE && body.len() >= 26 {
                format = u16::from_le_bytes([body[24], body[25]]); // WAVE_FORMAT_EXTENSIBLE
            }
        } else if id == b"data" {
            if rate != SAMPLE_RATE || channels == 0 {
                return Err(format!(
                    "{}: need 16 kHz audio (got {rate} Hz, {channels} channels); convert it first",
                    path.display()
                )
                .into());
            }
            let width = usize::from(bits / 8);
            let decode = |s: &[u8]| -> Option<f32> {
                Some(match (format, bits) {
                    (1, 8) => (f32::from(s[0]) - 128.0) / 128.0,
                    (1, 16) => f32::from(i16::from_le_bytes([s[0], s[1]])) / 32_768.0,
                    (1, 24) => {
                        (i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8) as f32 / 8_388_608.0
                    }
                    (1, 32) => {
                        i32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f32 / 2_147_483_648.0
                    }
                    (3, 32) => f32::from_le_bytes([s[0], s[1], s[2], s[3]]),
                    _ => return None,
                })
            };
            let frame = width * usize::from(channels);
            let mut out = Vec::with_capacity(body.len() / frame.max(1));
            for f in body.chunks_exact(frame) {
                let mut sum = 0.0;
                for s in f.chunks_exact(width) {
                    sum += decode(s).ok_or_else(|| {
                        format!(
                            "{}: unsupported WAV format {format}, {bits} bits",
                            path.display()
                        )
                    })?;
                }
                out.push(sum / f32::from(channels));
            }
            return Ok(out);
        }
        pos += 8 + size + (size & 1);
    }
    Err(format!("{}: no data chunk", path.display()).into())
}

/// Nearest-rank percentile of `values` (p in 0..=100); NaN when empty.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        f64::NAN
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let samples = read_wav(&args.wav)?;
    let audio_s = samples_to_seconds(samples.len());
    let reference_path = args
        .reference
        .clone()
        .unwrap_or_else(|| args.wav.with_extension("txt"));
    let reference = std::fs::read_to_string(&reference_path).ok();

    let config = EngineConfig {
        threads: args.threads,
        use_gpu: false,
        flash_attn: args.flash_attn,
        ..EngineConfig::default()
    };
    let t = Instant::now();
    let model = WhisperModel::load(&args.model, &config)?;
    let load_s = t.elapsed().as_secs_f64();
    let mut session = model.session()?;

    // The streaming run: the cost closure decodes for real.
    let stash: Stash = Arc::default();
    let mut costs: Vec<Cost> = Vec::new();
    let ms = |v: u32| (SAMPLE_RATE / 1000 * v) as usize;
    let defaults = PolicyConfig::for_device(args.gpu);
    let (floor, margin) = args.partial_context.map_or(
        (defaults.audio_ctx_floor, defaults.audio_ctx_margin),
        PartialContext::floor_and_margin,
    );
    let policy = PolicyConfig {
        language: args.language.clone(),
        step_samples: args.step_ms.map_or(defaults.step_samples, ms),
        max_step_samples: args.max_step_ms.map_or(defaults.max_step_samples, ms),
        min_partial_samples: args.min_partial_ms.map_or(defaults.min_partial_samples, ms),
        min_commit_samples: args.min_commit_ms.map_or(defaults.min_commit_samples, ms),
        vad: {
            let mut vad = defaults.vad.clone();
            if let Some(e) = args.endpoint_ms {
                vad.set_end_silence(ms(e));
            }
            vad
        },
        audio_ctx_floor: args.audio_ctx_floor.unwrap_or(floor),
        audio_ctx_margin: args.audio_ctx_margin.unwrap_or(margin),
        final_context: if args.final_fit {
            FinalContext::Fit
        } else {
            FinalContext::Full
        },
        partial_prefix: args.partial_prefix,
        limit_partial_tokens: args.partial_token_limit,
        stop_restated_partials: args.partial_stop_restated,
        ..defaults
    };
    policy.validate()?;
    let base_step = samples_to_seconds(policy.step_samples);
    let (ctx_floor, ctx_margin) = (policy.audio_ctx_floor, policy.audio_ctx_margin);
    let max_step_s = samples_to_seconds(policy.max_step_samples);
    let min_partial_s = samples_to_seconds(policy.min_partial_samples);
    let min_commit_s = samples_to_seconds(policy.min_commit_samples);
    let chunk = (SAMPLE_RATE / 1000 * args.chunk_ms) as usize;
    let run = {
        let stash = Arc::clone(&stash);
        let costs = &mut costs;
        let speed = args.speed;
        let verbose = args.verbose;
        let mut cost = |job: &transcribe_core::DecodeJob| -> u64 {
            let t = Instant::now();
            let before = transcribe_engine::decode_stats();
            let result = session.transcribe(&job.samples, &job.options);
            let wall_s = t.elapsed().as_secs_f64() / speed;
            let after = transcribe_engine::decode_stats();
            let (steps, batched_tokens) = (after.0 - before.0, after.1 - before.1);
            if verbose {
                let text = result
                    .as_ref()
                    .map_or_else(|e| e.to_string(), Transcript::text);
                eprintln!(
                    "job {} {:?} {:.2} s: {} steps, {} batched tokens, {:.0} ms; prefix {:?}: {text}",
                    job.id,
                    job.kind,
                    samples_to_seconds(job.samples.len()),
                    steps,
                    batched_tokens,
                    wall_s * 1e3,
                    job.options.prefix.as_deref().unwrap_or(""),
                );
            }
            stash
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push_back((job.samples.len(), result));
            costs.push(Cost {
                id: job.id,
                kind: job.kind,
                wall_s,
                steps,
                batched_tokens,
            });
            (wall_s * f64::from(SAMPLE_RATE)).round() as u64
        };
        let mut stashed = Stashed(Arc::clone(&stash));
        run_stream_timed(&mut stashed, &samples, chunk, policy, &mut cost)?
    };

    // Arrival of each job's result on the sample clock (one worker, jobs in order).
    let mut arrival = std::collections::HashMap::new();
    let mut previous = 0u64;
    for job in &run.jobs {
        let cost = costs
            .iter()
            .find(|c| c.id == job.id)
            .map_or(0.0, |c| c.wall_s);
        let done = job.polled_at.max(previous) + (cost * f64::from(SAMPLE_RATE)).round() as u64;
        arrival.insert(job.id, done);
        previous = done;
    }
    let to_s = |s: u64| s as f64 / f64::from(SAMPLE_RATE);

    let failures: Vec<String> = run
        .events
        .iter()
        .filter_map(|e| match &e.event {
            PolicyEvent::DecodeFailed {
                job_id,
                kind,
                message,
                ..
            } => Some(format!("job {job_id} ({kind:?}): {message}")),
            _ => None,
        })
        .collect();
    for f in failures.iter().take(5) {
        eprintln!("stream_sim: decode failed: {f}");
    }

    // Decode costs.
    let walls = |kind: Option<JobKind>| -> Vec<f64> {
        costs
            .iter()
            .filter(|c| kind.is_none_or(|k| c.kind == k))
            .map(|c| c.wall_s * 1000.0)
            .collect()
    };
    let (all_ms, partial_ms, final_ms) = (
        walls(None),
        walls(Some(JobKind::Partial)),
        walls(Some(JobKind::Final)),
    );
    let decode_total_s = all_ms.iter().sum::<f64>() / 1000.0;
    // Decoder calls per kind: single-token steps, tokens of batched calls.
    let calls = |kind: JobKind| -> (f64, f64) {
        let of_kind = costs.iter().filter(|c| c.kind == kind);
        let steps: i64 = of_kind.clone().map(|c| c.steps).sum();
        let batched: i64 = of_kind.map(|c| c.batched_tokens).sum();
        (steps as f64, batched as f64)
    };
    let (partial_steps, partial_batched) = calls(JobKind::Partial);
    let (final_steps, final_batched) = calls(JobKind::Final);

    // Finals: text, latency from utterance end and from endpoint detection.
    let mut finals = Vec::new();
    let mut latency_end = Vec::new();
    let mut max_length_finals = 0usize;
    let mut latency_endpoint = Vec::new();
    let mut final_times = std::collections::HashMap::new();
    for (i, ev) in run.events.iter().enumerate() {
        let PolicyEvent::Final {
            utterance_index,
            text,
            start_samples,
            end_samples,
            reason,
            ..
        } = &ev.event
        else {
            continue;
        };
        let job = run.jobs.iter().rev().find(|j| {
            j.kind == JobKind::Final
                && j.utterance_index == *utterance_index
                && j.done_at == ev.at_samples
        });
        let at = job
            .and_then(|j| arrival.get(&j.id).copied())
            .unwrap_or(ev.at_samples);
        final_times.insert(*utterance_index, at);
        if args.verbose {
            eprintln!(
                "final {utterance_index} [{:.2}-{:.2} s, {reason:?}] at {:.2} s: {text}",
                to_s(*start_samples),
                to_s(*end_samples),
                to_s(at)
            );
        }
        finals.push(text.clone());
        if *reason == EndReason::MaxLength {
            // Cut after its last committed word, behind the clock: not an end of speech.
            max_length_finals += 1;
            continue;
        }
        latency_end.push(to_s(at.saturating_sub(*end_samples)));
        let detected = run.events[..i]
            .iter()
            .rev()
            .find_map(|e| match e.event {
                PolicyEvent::SpeechEnded { sample } if sample == *end_samples => Some(e.at_samples),
                _ => None,
            })
            .unwrap_or(*end_samples);
        latency_endpoint.push(to_s(at.saturating_sub(detected)));
    }

    // An interim arrives with the result of the partial job that ended at its audio end.
    let interim_at = |utterance: u64, audio_end: u64, emitted: u64| -> u64 {
        run.jobs
            .iter()
            .find(|j| {
                j.kind == JobKind::Partial
                    && j.utterance_index == utterance
                    && j.offset_samples + j.len_samples as u64 == audio_end
            })
            .and_then(|j| arrival.get(&j.id).copied())
            .unwrap_or(emitted)
    };

    // Emission: a final word's end in the audio to the first interim showing it (anywhere
    // in committed + tail at its position) and to the first committing it.
    let mut emit_seen = Vec::new();
    let mut emit_committed = Vec::new();
    for ev in &run.events {
        let PolicyEvent::Final {
            utterance_index,
            words,
            ..
        } = &ev.event
        else {
            continue;
        };
        let interims: Vec<(u64, Vec<String>, usize)> = run
            .events
            .iter()
            .filter_map(|e| match &e.event {
                PolicyEvent::Interim {
                    utterance_index: u,
                    committed,
                    tail,
                    audio_end_samples,
                    ..
                } if u == utterance_index => {
                    let at = interim_at(*u, *audio_end_samples, e.at_samples);
                    let mut all = tokens(committed);
                    let n = all.len();
                    all.extend(tokens(tail));
                    if args.verbose {
                        eprintln!(
                            "interim {u} at {:.2} s (audio to {:.2} s): {} | {}",
                            to_s(at),
                            to_s(*audio_end_samples),
                            all[..n].join(" "),
                            all[n..].join(" ")
                        );
                    }
                    Some((at, all, n))
                }
                _ => None,
            })
            .collect();
        let final_at = final_times
            .get(utterance_index)
            .copied()
            .unwrap_or(ev.at_samples);
        for (k, w) in words.iter().enumerate() {
            let word = normalize(&w.text);
            let end = (w.end * f64::from(SAMPLE_RATE)).round() as u64;
            let seen = interims
                .iter()
                .find(|(_, ws, _)| ws.get(k) == Some(&word))
                .map_or(final_at, |i| i.0);
            let committed = interims
                .iter()
                .find(|(_, ws, n)| k < *n && ws.get(k) == Some(&word))
                .map_or(final_at, |i| i.0);
            emit_seen.push(to_s(seen.saturating_sub(end)));
            emit_committed.push(to_s(committed.saturating_sub(end)));
            if args.verbose {
                eprintln!(
                    "word {utterance_index}.{k} {word:?} ends {:.2} s: seen +{:.2} s{}, committed +{:.2} s",
                    w.end,
                    to_s(seen.saturating_sub(end)),
                    if seen == final_at { " (final)" } else { "" },
                    to_s(committed.saturating_sub(end))
                );
            }
        }
    }

    // Aligned emission (stream_bench's measure, on the sample clock): each final word's
    // latency to the first moment the text shown (finals so far, then the interim) holds
    // it in place, by a minimum-edit-distance alignment.
    let mut moments: Vec<(u64, &PolicyEvent)> = Vec::new();
    for e in &run.events {
        let at = match &e.event {
            PolicyEvent::Interim {
                utterance_index: u,
                audio_end_samples,
                ..
            } => interim_at(*u, *audio_end_samples, e.at_samples),
            PolicyEvent::Final {
                utterance_index, ..
            } => final_times
                .get(utterance_index)
                .copied()
                .unwrap_or(e.at_samples),
            _ => continue,
        };
        moments.push((at, &e.event));
    }
    moments.sort_by_key(|(at, _)| *at);
    let mut final_words = Vec::new();
    let mut shown = ShownText::default();
    let mut shown_at = Vec::new();
    for (at, event) in moments {
        match event {
            PolicyEvent::Interim {
                utterance_index,
                committed,
                tail,
                ..
            } => shown.interim(*utterance_index, committed, tail),
            PolicyEvent::Final {
                utterance_index,
                text,
                words,
                ..
            } => {
                shown.final_result(*utterance_index, text);
                for w in words {
                    for token in tokens(&w.text) {
                        final_words.push(RefWord {
                            token,
                            start: w.start,
                            end: w.end,
                        });
                    }
                }
            }
            _ => continue,
        }
        shown_at.push((to_s(at), shown.tokens()));
    }
    let emit_aligned: Vec<f64> = first_appearances(&final_words, shown_at)
        .into_iter()
        .map(|l| l.unwrap_or(f64::INFINITY))
        .collect();
    if args.verbose {
        for (w, l) in final_words.iter().zip(&emit_aligned) {
            eprintln!("aligned {:?} ends {:.2} s: shown +{l:.2} s", w.token, w.end);
        }
    }

    // Step widening: new audio between consecutive partials of one utterance.
    let mut steps = Vec::new();
    let mut last: Option<(u64, usize)> = None;
    for j in run.jobs.iter().filter(|j| j.kind == JobKind::Partial) {
        if let Some((u, len)) = last
            && u == j.utterance_index
            && j.len_samples > len
        {
            steps.push(samples_to_seconds(j.len_samples - len));
        }
        last = Some((j.utterance_index, j.len_samples));
    }
    let widened = steps.iter().filter(|&&s| s > base_step * 1.1).count();

    // Streaming and offline WER.
    let stream_text = finals.join(" ");
    let t = Instant::now();
    let offline_text = if args.no_offline {
        String::new()
    } else {
        session
            .transcribe(
                &samples,
                &DecodeOptions {
                    language: args.language.clone(),
                    ..DecodeOptions::default()
                },
            )?
            .text()
    };
    let offline_s = if args.no_offline {
        f64::NAN
    } else {
        t.elapsed().as_secs_f64()
    };
    let (stream_wer, offline_wer) = match &reference {
        Some(r) if args.no_offline => (wer(r, &stream_text).rate(), f64::NAN),
        Some(r) => (wer(r, &stream_text).rate(), wer(r, &offline_text).rate()),
        None => (f64::NAN, f64::NAN),
    };

    let partials = run
        .jobs
        .iter()
        .filter(|j| j.kind == JobKind::Partial)
        .count();
    let final_jobs = run.jobs.len() - partials;
    let name = args
        .model
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let metrics: Vec<(&str, f64)> = vec![
        ("audio_s", audio_s),
        ("threads", args.threads as f64),
        ("chunk_ms", f64::from(args.chunk_ms)),
        ("step_s", base_step),
        ("max_step_s", max_step_s),
        ("min_partial_s", min_partial_s),
        ("min_commit_s", min_commit_s),
        ("final_context_fit", f64::from(u8::from(args.final_fit))),
        ("audio_ctx_floor", f64::from(ctx_floor)),
        ("audio_ctx_margin", f64::from(ctx_margin)),
        ("partial_prefix", f64::from(u8::from(args.partial_prefix))),
        (
            "partial_token_limit",
            f64::from(u8::from(args.partial_token_limit)),
        ),
        (
            "partial_stop_restated",
            f64::from(u8::from(args.partial_stop_restated)),
        ),
        ("speed", args.speed),
        ("model_load_s", load_s),
        ("decode_total_s", decode_total_s),
        ("compute_load", decode_total_s / audio_s),
        ("partial_jobs", partials as f64),
        ("final_jobs", final_jobs as f64),
        ("finals", finals.len() as f64),
        ("max_length_finals", max_length_finals as f64),
        ("decode_failures", failures.len() as f64),
        ("decode_ms_mean", mean(&all_ms)),
        ("decode_ms_p95", percentile(&all_ms, 95.0)),
        ("partial_decode_ms_mean", mean(&partial_ms)),
        ("partial_decode_ms_p95", percentile(&partial_ms, 95.0)),
        ("final_decode_ms_mean", mean(&final_ms)),
        ("final_decode_ms_p95", percentile(&final_ms, 95.0)),
        ("partial_decoder_steps", partial_steps),
        ("partial_decoder_batched_tokens", partial_batched),
        ("final_decoder_steps", final_steps),
        ("final_decoder_batched_tokens", final_batched),
        ("final_latency_s_p50", percentile(&latency_end, 50.0)),
        ("final_latency_s_p95", percentile(&latency_end, 95.0)),
        (
            "final_after_endpoint_s_p50",
            percentile(&latency_endpoint, 50.0),
        ),
        (
            "final_after_endpoint_s_p95",
            percentile(&latency_endpoint, 95.0),
        ),
        ("word_shown_s_p50", percentile(&emit_aligned, 50.0)),
        ("word_shown_s_p95", percentile(&emit_aligned, 95.0)),
        ("emission_seen_s_p50", percentile(&emit_seen, 50.0)),
        ("emission_seen_s_p95", percentile(&emit_seen, 95.0)),
        (
            "emission_committed_s_p50",
            percentile(&emit_committed, 50.0),
        ),
        (
            "emission_committed_s_p95",
            percentile(&emit_committed, 95.0),
        ),
        ("step_s_median", percentile(&steps, 50.0)),
        ("step_s_max", steps.iter().copied().fold(f64::NAN, f64::max)),
        ("steps_widened", widened as f64),
        ("steps", steps.len() as f64),
        ("stream_wer", stream_wer),
        ("offline_wer", offline_wer),
        ("offline_rtf", offline_s / audio_s),
    ];

    println!(
        "stream_sim: {} on {} ({audio_s:.1} s), {} threads, {} ms chunks",
        name,
        args.wav.display(),
        args.threads,
        args.chunk_ms
    );
    for (k, v) in &metrics {
        println!("  {k:28} {v:.3}");
    }
    println!("  stream text:  {}", normalize(&stream_text));
    println!("  offline text: {}", normalize(&offline_text));
    if reference.is_none() {
        println!(
            "  (no reference at {}: WER not computed)",
            reference_path.display()
        );
    }

    if let Some(path) = &args.json {
        let mut json = String::from("{\n");
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        writeln!(
            json,
            "  \"model\": \"{}\",",
            esc(&args.model.display().to_string())
        )?;
        writeln!(
            json,
            "  \"wav\": \"{}\",",
            esc(&args.wav.display().to_string())
        )?;
        writeln!(
            json,
            "  \"language\": {},",
            args.language
                .as_deref()
                .map_or("null".into(), |l| format!("\"{}\"", esc(l)))
        )?;
        for (k, v) in &metrics {
            let v = if v.is_finite() {
                format!("{v}")
            } else {
                "null".into()
            };
            writeln!(json, "  \"{k}\": {v},")?;
        }
        writeln!(json, "  \"stream_text\": \"{}\",", esc(&stream_text))?;
        writeln!(json, "  \"offline_text\": \"{}\"", esc(&offline_text))?;
        json.push_str("}\n");
        std::fs::write(path, json)?;
    }
    Ok(())
}
