//! `transcribe-soak`: a bounded soak and load test of a `transcribe-server` on loopback.
//!
//! ```text
//! transcribe-soak [--server-bin PATH] [--model tiny.en] [--server-arg=--workers=1 ...]
//!                 | --server http://127.0.0.1:PORT [--server-pid PID]
//!                 [--streams N] [--minutes M] [--audio FILE|DIR,...]
//!                 [--disconnect-rate 0.1] [--bad-per-minute 6] [--seed 1] [--json FILE]
//! ```
//!
//! It starts a server itself (or targets one on loopback; other hosts are refused), then
//! runs N stream slots for M minutes. Each slot streams files one after another, each on a
//! new connection and a new stream, paced in real time (a file is started only if it fits
//! in the time left). A seeded random choice drops a fraction of the streams mid-audio or
//! mid-response; another task sends bad requests (wrong sample rate, odd LINEAR16 byte
//! count, missing config, garbage) at the given rate, which must get INVALID_ARGUMENT.
//!
//! It prints a markdown table (stdout) and writes JSON (`--json`): audio sent, received,
//! processed and lost on completed streams (from the server's `Progress`; see
//! `accounting`), finals, p50/p95 word, partial and finalisation latency, the server's
//! RSS at start, end and peak (from `/proc/PID/status`, once a second) and CPU, errors by
//! status code, bad-request statuses, load average at start and end, and whether the
//! server died.
//!
//! Exit status: 0 pass; 1 lost audio on a completed stream, a server that died, or
//! streams still running at the hard deadline (M minutes + [`GRACE`]); 2 runtime error;
//! 64 bad usage.
//!
//! # Layout
//! - `plan`: the seeded RNG and the choices (file, fate, bad-request kind and timing).
//! - `stream`: one paced stream or bad request against the server, as a record.
//! - `accounting`: lost-audio verdicts and the loopback check.
//! - `process`: starting and stopping the server, `/proc` sampling, health.
//! - `report`: aggregation, the table and the JSON.

mod accounting;
mod plan;
mod process;
mod report;
mod stream;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tonic::Code;
use transcribe_client::StreamOptions;
use transcribe_core::SAMPLE_RATE;

use crate::plan::{BadKind, Rng};
use crate::stream::{Outcome, StreamRecord};

/// Most concurrent stream slots (a soak of this machine, not a load generator for a farm).
const MAX_STREAMS: usize = 64;

/// Longest soak, in minutes.
const MAX_MINUTES: f64 = 120.0;

/// Most bad requests per minute.
const MAX_BAD_PER_MINUTE: f64 = 600.0;

/// Time after the planned end that streams get to finish before they are abandoned.
const GRACE: Duration = Duration::from_secs(60);

/// How often the server's memory and liveness are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Memory growth is also reported from this far in: the first decodes allocate the
/// engine's buffers, which is warm-up, not a leak. A whole number of [`SAMPLE_EVERY`].
const WARM_UP: Duration = Duration::from_secs(60);

/// Audio extensions taken from `--audio` directories.
const AUDIO_EXTENSIONS: [&str; 5] = ["wav", "flac", "mp3", "ogg", "m4a"];

/// Soak and load test of a transcribe server on loopback.
#[derive(Parser, Debug)]
#[command(name = "transcribe-soak", version)]
struct Args {
    /// Target this running server (http://127.0.0.1:PORT; loopback only) instead of
    /// starting one.
    #[arg(long, conflicts_with = "server_bin")]
    server: Option<String>,
    /// Pid of the --server process, for memory sampling and crash detection.
    #[arg(long, requires = "server")]
    server_pid: Option<u32>,
    /// The transcribe-server binary to start. [default: beside this binary]
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Model the started server serves (name or ggml path).
    #[arg(long, default_value = "tiny.en")]
    model: String,
    /// An extra flag for the started server (repeat; e.g. --server-arg=--workers=1).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Write the started server's output here. [default: discarded]
    #[arg(long)]
    server_log: Option<PathBuf>,
    /// Concurrent real-time streams.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Minutes of audio per stream slot.
    #[arg(long, default_value_t = 1.0)]
    minutes: f64,
    /// Audio files or directories. [default: audio-fixtures/speech/*.wav]
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    audio: Vec<PathBuf>,
    /// Fraction of streams the client drops (half mid-audio, half mid-response).
    #[arg(long, default_value_t = 0.1)]
    disconnect_rate: f64,
    /// Bad requests per minute (0: none).
    #[arg(long, default_value_t = 6.0)]
    bad_per_minute: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Language to pin.
    #[arg(long, default_value = "en")]
    language: String,
    /// Audio per message, in milliseconds.
    #[arg(long, default_value_t = 100)]
    chunk_ms: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Args {
    /// Checks bounds and the target; the message names the flag.
    fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_STREAMS).contains(&self.streams) {
            return Err(format!("--streams: give 1 to {MAX_STREAMS}"));
        }
        if !(self.minutes > 0.0 && self.minutes <= MAX_MINUTES) {
            return Err(format!(
                "--minutes: give more than 0 and at most {MAX_MINUTES}"
            ));
        }
        if !(0.0..=1.0).contains(&self.disconnect_rate) {
            return Err("--disconnect-rate: give a fraction in 0..=1".to_owned());
        }
        if !(0.0..=MAX_BAD_PER_MINUTE).contains(&self.bad_per_minute) {
            return Err(format!("--bad-per-minute: give 0 to {MAX_BAD_PER_MINUTE}"));
        }
        if !(10..=1_000).contains(&self.chunk_ms) {
            return Err("--chunk-ms: give 10 to 1000".to_owned());
        }
        if let Some(url) = &self.server {
            accounting::check_loopback(url).map_err(|e| format!("--server: {e}"))?;
        }
        Ok(())
    }
}

/// One decoded input file.
struct Input {
    name: String,
    samples: Arc<Vec<f32>>,
    length: Duration,
}

fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

fn audio_paths(given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let roots = if given.is_empty() {
        vec![workspace_root().join("audio-fixtures/speech")]
    } else {
        given.to_vec()
    };
    let mut paths = Vec::new();
    for root in roots {
        if root.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&root)
                .with_context(|| format!("reading {}", root.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                    })
                })
                .collect();
            found.sort();
            paths.extend(found);
        } else {
            paths.push(root);
        }
    }
    if paths.is_empty() {
        bail!("no audio files found");
    }
    Ok(paths)
}

fn load_inputs(paths: &[PathBuf]) -> Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for path in paths {
        let audio = transcribe_audio::decode_file(path)
            .with_context(|| format!("decoding {}", path.display()))?;
        if audio.samples.is_empty() {
            continue;
        }
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        inputs.push(Input {
            name,
            length: Duration::from_secs_f64(audio.samples.len() as f64 / f64::from(SAMPLE_RATE)),
            samples: Arc::new(audio.samples),
        });
    }
    if inputs.is_empty() {
        bail!("every audio file is empty");
    }
    Ok(inputs)
}

/// What every stream slot shares.
struct Slots {
    url: String,
    inputs: Vec<Input>,
    options: StreamOptions,
    /// No file is started that would end after this.
    end: Instant,
    disconnect_rate: f64,
    /// Finished streams (locked only to push and to read at the end).
    records: Mutex<Vec<StreamRecord>>,
}

/// One stream slot: files one after another until the time is up.
async fn slot(index: usize, shared: Arc<Slots>, mut rng: Rng) {
    let Slots {
        url,
        inputs,
        options,
        end,
        disconnect_rate,
        records: sink,
    } = &*shared;
    let (end, disconnect_rate) = (*end, *disconnect_rate);
    let lengths: Vec<Duration> = inputs.iter().map(|i| i.length).collect();
    // A random start within 2 s, so slots do not begin (and end utterances) in lockstep.
    tokio::time::sleep(Duration::from_secs_f64(rng.range(0.0, 2.0))).await;
    loop {
        let remaining = end.saturating_duration_since(Instant::now());
        let Some(k) = plan::choose_file(&mut rng, &lengths, remaining) else {
            break;
        };
        let input = &inputs[k];
        let fate = plan::choose_fate(&mut rng, disconnect_rate, input.length);
        let record = match stream::connect(url).await {
            Ok(mut grpc) => {
                stream::run_stream(&mut grpc, index, &input.name, &input.samples, options, fate)
                    .await
            }
            Err(error) => {
                tokio::time::sleep(SAMPLE_EVERY).await;
                StreamRecord::new(
                    index,
                    &input.name,
                    fate,
                    input.length,
                    Outcome::ConnectFailed(error),
                )
            }
        };
        if let Ok(mut records) = sink.lock() {
            records.push(record);
        }
    }
}

/// Bad requests at `per_minute` until `end`.
async fn bad_requests(
    url: String,
    mut rng: Rng,
    per_minute: f64,
    end: Instant,
    sink: Arc<Mutex<Vec<(BadKind, Code)>>>,
) {
    while let Some(gap) = plan::bad_gap(&mut rng, per_minute) {
        if Instant::now() + gap > end {
            break;
        }
        tokio::time::sleep(gap).await;
        let kind = BadKind::ALL[rng.below(BadKind::ALL.len())];
        let code = match stream::connect(&url).await {
            Ok(mut grpc) => stream::run_bad(&mut grpc, kind, &mut rng).await,
            Err(_) => Code::Unavailable,
        };
        if let Ok(mut results) = sink.lock() {
            results.push((kind, code));
        }
    }
}

/// The server under test.
enum Target {
    Spawned(process::Spawned),
    External { url: String, pid: Option<u32> },
}

impl Target {
    fn url(&self) -> &str {
        match self {
            Self::Spawned(s) => &s.url,
            Self::External { url, .. } => url,
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Self::Spawned(s) => Some(s.child.id()),
            Self::External { pid, .. } => *pid,
        }
    }

    /// `Some(why)` when the server has died.
    fn died(&mut self) -> Option<String> {
        match self {
            Self::Spawned(s) => s.exited().map(|status| status.to_string()),
            Self::External { pid: Some(pid), .. } => {
                (!process::alive(*pid)).then(|| format!("process {pid} is gone"))
            }
            Self::External { pid: None, .. } => None,
        }
    }
}

async fn run(args: Args) -> Result<bool> {
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let inputs = load_inputs(&audio_paths(&args.audio)?)?;
    eprintln!(
        "soak: {} file(s), {:.1} s of audio in all",
        inputs.len(),
        inputs.iter().map(|i| i.length.as_secs_f64()).sum::<f64>()
    );

    let mut target = match &args.server {
        Some(url) => Target::External {
            url: url.clone(),
            pid: args.server_pid,
        },
        None => {
            let binary = match &args.server_bin {
                Some(path) => path.clone(),
                None => std::env::current_exe()
                    .context("locating this binary")?
                    .with_file_name("transcribe-server"),
            };
            let spawned = process::Spawned::start(
                &binary,
                &args.model,
                &args.server_args,
                args.server_log.as_deref(),
            )?;
            Target::Spawned(spawned)
        }
    };
    let url = target.url().to_owned();
    eprintln!("soak: waiting for {url} to serve...");
    if let Err(error) = process::wait_ready(&url, || target_died_now(&mut target)).await {
        if let Target::Spawned(s) = target {
            let _ = s.stop().await;
        }
        return Err(error);
    }

    let mut report = report::empty(command, args.seed, args.streams, args.minutes, url.clone());
    report.spawned = matches!(target, Target::Spawned(_));
    report.server_pid = target.pid();
    report.load_start = process::load_average();
    let pid = target.pid();
    let cpu_start = pid.and_then(process::cpu_seconds);
    let mut rss: Vec<u64> = pid.and_then(process::rss_kib).into_iter().collect();

    let options = StreamOptions {
        realtime: true,
        chunk: Duration::from_millis(args.chunk_ms),
        language: Some(args.language.clone()),
        interim_results: true,
        word_time_offsets: true,
        ..StreamOptions::default()
    };
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(args.minutes * 60.0);
    let hard_deadline = end + GRACE;
    let shared = Arc::new(Slots {
        url: url.clone(),
        inputs,
        options,
        end,
        disconnect_rate: args.disconnect_rate,
        records: Mutex::new(Vec::new()),
    });
    let bad = Arc::new(Mutex::new(Vec::new()));
    let root = Rng::new(args.seed);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.streams {
        tasks.spawn(slot(i, shared.clone(), root.fork(i as u64)));
    }
    tasks.spawn(bad_requests(
        url.clone(),
        root.fork(u64::MAX),
        args.bad_per_minute,
        end,
        bad.clone(),
    ));
    eprintln!(
        "soak: {} stream(s) for {:.2} min, disconnect rate {}, {} bad request(s)/min, seed {}",
        args.streams, args.minutes, args.disconnect_rate, args.bad_per_minute, args.seed
    );

    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    let mut abandoned = 0;
    let mut last_note = Instant::now();
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(_) => {}
                None => break,
            },
            _ = ticker.tick() => {
                if let Some(k) = pid.and_then(process::rss_kib) {
                    rss.push(k);
                }
                if let Some(why) = target.died() {
                    report.server_died = true;
                    report.server_exit = Some(why);
                    abandoned = tasks.len();
                    tasks.abort_all();
                    break;
                }
                if Instant::now() > hard_deadline {
                    abandoned = tasks.len();
                    tasks.abort_all();
                    break;
                }
                if last_note.elapsed() >= Duration::from_secs(60) {
                    last_note = Instant::now();
                    let done = shared.records.lock().map_or(0, |r| r.len());
                    eprintln!(
                        "soak: {:.0} s, {done} stream(s) done, RSS {} KiB",
                        started.elapsed().as_secs_f64(),
                        rss.last().copied().unwrap_or(0)
                    );
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
    report.wall_s = started.elapsed().as_secs_f64();
    if let Some(k) = pid.and_then(process::rss_kib) {
        rss.push(k);
    }
    report.rss = report::Memory::from_samples(&rss, WARM_UP.as_secs() as usize);
    report.load_end = process::load_average();
    if let (Some(a), Some(b)) = (cpu_start, pid.and_then(process::cpu_seconds)) {
        report.server_cpu_s = Some(b - a);
        report.server_cpu_share = Some((b - a) / report.wall_s.max(1e-9));
    }
    if !report.server_died {
        if let Some(why) = target.died() {
            report.server_died = true;
            report.server_exit = Some(why);
        } else if !process::serving(&url).await {
            report.server_died = true;
            report.server_exit = Some("stopped answering health checks".to_owned());
        }
    }
    if let Target::Spawned(s) = target {
        let status = s.stop().await?;
        eprintln!(
            "soak: server stopped ({})",
            status.map_or_else(|| "unknown status".to_owned(), |s| s.to_string())
        );
    }

    let records = shared.records.lock().map(|r| r.clone()).unwrap_or_default();
    let bad = bad.lock().map(|b| b.clone()).unwrap_or_default();
    let mut report = report::aggregate(report, &records, &bad);
    if abandoned > 0 {
        report
            .stream_errors
            .insert("ABANDONED_AT_DEADLINE".to_owned(), abandoned);
        report.pass = false;
    }
    print!("{}", report::table(&report));
    if let Some(path) = &args.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("soak: wrote {}", path.display());
    }
    Ok(report.pass)
}

/// For the readiness wait: whether the server under test has died.
fn target_died_now(target: &mut Target) -> bool {
    target.died().is_some()
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            let usage = error.use_stderr();
            let _ = error.print();
            return if usage {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(message) = args.validate() {
        eprintln!("transcribe-soak: {message}");
        return ExitCode::from(64);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(error) => {
            eprintln!("transcribe-soak: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("transcribe-soak: FAIL (lost audio, a dead server or abandoned streams)");
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("transcribe-soak: {error:#}");
            ExitCode::from(2)
        }
    }
}
