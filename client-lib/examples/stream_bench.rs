//! Streaming benchmark: a real server in-process on `127.0.0.1:0`, fixtures streamed to it
//! over gRPC paced in real time, by 1..N concurrent clients.
//!
//! ```text
//! cargo run --release -p transcribe-client --example stream_bench -- \
//!     [--model tiny.en] [--streams 1,2,3,4] [--files a.wav,b.wav] [--workers N]
//! ```
//!
//! For every file it first transcribes the whole file offline with the same model (the
//! reference for word end times and the offline WER), then streams it with interim results
//! on, N streams at once, and measures:
//! - **word emission latency**: for each word of the offline transcript, the wall time from
//!   the moment its end was sent (stream start + word end: the client paces in real time) to
//!   the first interim or final whose text holds it. Words are matched in order: after each
//!   response the text so far (finals + the open utterance's interim) is aligned with the
//!   offline words heard so far (minimum edit distance); a word counts when it is aligned
//!   to an equal word. Words never matched are counted, not timed.
//! - **finalisation latency**: for each final, the wall time from stream start + the
//!   final's end offset to its arrival (and, for comparison, from its last word's end).
//! - **WER** of the concatenated finals and of the offline transcript against the reference
//!   (`.txt` beside the file), after `transcribe_core::text::normalize`.
//!
//! Capacity is the largest N such that it and every smaller N tested keep both p95
//! latencies under the target (`--latency-target`, 2 s) on every file; `--until-fail` stops
//! stepping a file's counts at the first that misses it (`scripts/bench` passes
//! `--streams 1,2,...,M --until-fail`). `--server URL` streams to a running server (the real
//! `transcribe-server` binary, as `scripts/bench` does) instead of an in-process one; the
//! offline reference is still decoded here, on the CPU. It prints a markdown table and
//! writes JSON (default `target/bench/stream.json`).
//!
//! # Layout
//! - `Args`: flags.
//! - `offline`: the offline reference transcript.
//! - `run_stream` / `Run`: one paced stream and the events it got, with arrival times
//!   (word emission matching and percentiles: `transcribe_client::latency`).
//! - `Row`, `to_json`, `table`: aggregation and output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tokio::sync::Barrier;
use transcribe_client::latency::{RefWord, Trace, final_latencies, percentile, word_latencies};
use transcribe_client::{self as client, StreamEvent, StreamOptions};
use transcribe_core::text::{normalize, wer};
use transcribe_core::{DecodeOptions, Transcriber};
use transcribe_server::{ServerArgs, WhisperLoader};

/// p95 latency under which a stream count counts as sustained (issue 3: "p95 under 2 s").
const THRESHOLD_SECONDS: f64 = 2.0;

/// Streams the fixtures in real time to an in-process server and reports latencies.
#[derive(Parser, Debug)]
struct Args {
    /// Model name or ggml path (served and used for the offline reference).
    #[arg(long, default_value = "tiny.en")]
    model: String,
    /// Concurrent stream counts to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3,4")]
    streams: Vec<usize>,
    /// Audio files (a `.txt` reference beside each). [default: long_60s.wav, pauses.wav]
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    files: Vec<PathBuf>,
    /// Server inference workers. [default: the server's]
    #[arg(long)]
    workers: Option<usize>,
    /// Language to pin (both offline and streaming).
    #[arg(long, default_value = "en")]
    language: String,
    /// Seconds between the starts of concurrent streams (0: all start together, the
    /// worst case).
    #[arg(long, default_value_t = 0.0)]
    stagger: f64,
    /// Print every final (arrival, audio span, last word end, text) to stderr.
    #[arg(long)]
    verbose: bool,
    /// JSON output. [default: target/bench/stream.json under the workspace root]
    #[arg(long)]
    json: Option<PathBuf>,
    /// Stream to this running server (e.g. `http://127.0.0.1:50051`) instead of starting
    /// one in-process; it must serve `--model` and admit the largest stream count.
    #[arg(long)]
    server: Option<String>,
    /// Stop stepping a file's stream counts at the first count whose p95 misses the target.
    #[arg(long)]
    until_fail: bool,
    /// p95 word and final latency (seconds) a stream count must stay under.
    #[arg(long, default_value_t = THRESHOLD_SECONDS)]
    latency_target: f64,
}

fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

struct Offline {
    words: Vec<RefWord>,
    text: String,
    seconds: f64,
}

fn offline(model_path: &Path, samples: &[f32], threads: usize, language: &str) -> Result<Offline> {
    let config = transcribe_engine::EngineConfig {
        threads,
        ..Default::default()
    };
    let model = transcribe_engine::WhisperModel::load(model_path, &config)?;
    let mut session = model.session()?;
    let options = DecodeOptions {
        language: Some(language.to_owned()),
        ..DecodeOptions::default()
    };
    let started = Instant::now();
    let transcript = session.transcribe(samples, &options)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut words = Vec::new();
    for w in transcript.words() {
        for token in normalize(&w.text).split_whitespace() {
            words.push(RefWord {
                token: token.to_owned(),
                start: w.start,
                end: w.end,
            });
        }
    }
    Ok(Offline {
        words,
        text: transcript.text(),
        seconds,
    })
}

/// One stream's events with their arrival times.
struct Run {
    trace: Trace,
    finals_text: String,
    elapsed: f64,
}

async fn run_stream(
    url: String,
    samples: Arc<Vec<f32>>,
    options: StreamOptions,
    barrier: Arc<Barrier>,
    delay: Duration,
) -> Result<Run> {
    let mut grpc = client::connect(&url).await?;
    barrier.wait().await;
    tokio::time::sleep(delay).await;
    let mut events = Vec::new();
    let start = Instant::now();
    let summary = client::stream_with(&mut grpc, &samples, &options, |e| {
        events.push((Instant::now(), e));
    })
    .await?;
    Ok(Run {
        trace: Trace { start, events },
        finals_text: summary.text(),
        elapsed: start.elapsed().as_secs_f64(),
    })
}

fn print_finals(runs: &[Run]) {
    for (i, run) in runs.iter().enumerate() {
        let trace = &run.trace;
        for (at, e) in &trace.events {
            if let StreamEvent::Final(f) = e {
                eprintln!(
                    "  stream {i} final #{} at {:.2} s: audio {:.2}-{:.2}, last word end {}: {:?}",
                    f.utterance_index,
                    at.duration_since(trace.start).as_secs_f64(),
                    f.start,
                    f.end,
                    fmt_s(f.words.last().map(|w| w.end)),
                    f.text
                );
            }
        }
    }
}

/// One (file, stream count) measurement.
struct Row {
    file: String,
    audio_seconds: f64,
    streams: usize,
    words: usize,
    unmatched: usize,
    word_p50: Option<f64>,
    word_p95: Option<f64>,
    finals: usize,
    final_p50: Option<f64>,
    final_p95: Option<f64>,
    final_word_p50: Option<f64>,
    final_word_p95: Option<f64>,
    streaming_wer: Vec<f64>,
    offline_wer: f64,
    offline_seconds: f64,
    tail_max: f64,
    /// The machine's 1-minute load average when the row finished (other jobs share it).
    load: Option<f64>,
    /// CPU seconds this process (server and clients) used per wall second of the row:
    /// how much of the machine it got.
    cpu_share: Option<f64>,
    /// The p95 latency target (`--latency-target`).
    target: f64,
}

impl Row {
    fn ok(&self) -> bool {
        let under = |v: Option<f64>| v.is_some_and(|v| v < self.target);
        under(self.word_p95) && under(self.final_p95)
    }

    fn wer_mean(&self) -> f64 {
        self.streaming_wer.iter().sum::<f64>() / self.streaming_wer.len().max(1) as f64
    }
}

fn measure(
    file: &str,
    audio_seconds: f64,
    reference_text: &str,
    off: &Offline,
    runs: &[Run],
) -> Row {
    let mut words = Vec::new();
    let mut unmatched = 0;
    let mut finals = Vec::new();
    let mut final_words = Vec::new();
    let mut streaming_wer = Vec::new();
    let mut tail_max: f64 = 0.0;
    for run in runs {
        let trace = &run.trace;
        for l in word_latencies(&off.words, trace) {
            match l {
                Some(l) => words.push(l),
                None => unmatched += 1,
            }
        }
        for (f, w) in final_latencies(trace) {
            finals.push(f);
            final_words.extend(w);
        }
        streaming_wer.push(wer(reference_text, &run.finals_text).rate());
        tail_max = tail_max.max(run.elapsed - audio_seconds);
    }
    Row {
        file: file.to_owned(),
        audio_seconds,
        streams: runs.len(),
        words: off.words.len() * runs.len(),
        unmatched,
        word_p50: percentile(&words, 50.0),
        word_p95: percentile(&words, 95.0),
        finals: finals.len(),
        final_p50: percentile(&finals, 50.0),
        final_p95: percentile(&finals, 95.0),
        final_word_p50: percentile(&final_words, 50.0),
        final_word_p95: percentile(&final_words, 95.0),
        streaming_wer,
        offline_wer: wer(reference_text, &off.text).rate(),
        offline_seconds: off.seconds,
        tail_max,
        load: load_average(),
        cpu_share: None,
        target: THRESHOLD_SECONDS,
    }
}

/// CPU seconds (user + system) this process has used so far (`/proc/self/stat`).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK), fixed by the kernel ABI).
    Some(ticks / 100.0)
}

/// The 1-minute load average (`/proc/loadavg`), where there is one.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn fmt_s(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn json_num(v: Option<f64>) -> String {
    v.map_or_else(|| "null".to_owned(), |v| format!("{v:.4}"))
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn table(model: &str, rows: &[Row]) -> String {
    let mut s = String::from(
        "| model | file | streams | word p50 (s) | word p95 (s) | unmatched words | final p50 (s) | final p95 (s) | final from last word p50/p95 (s) | streaming WER | offline WER | end-of-audio to last final, max (s) | load avg | bench CPU share (cores) | p95 < target |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {model} | {} | {} | {} | {} | {}/{} | {} | {} | {}/{} | {:.1}% | {:.1}% | {:.2} | {} | {} | {} |\n",
            r.file,
            r.streams,
            fmt_s(r.word_p50),
            fmt_s(r.word_p95),
            r.unmatched,
            r.words,
            fmt_s(r.final_p50),
            fmt_s(r.final_p95),
            fmt_s(r.final_word_p50),
            fmt_s(r.final_word_p95),
            100.0 * r.wer_mean(),
            100.0 * r.offline_wer,
            r.tail_max,
            r.load.map_or_else(|| "-".to_owned(), |l| format!("{l:.1}")),
            fmt_s(r.cpu_share),
            if r.ok() { "yes" } else { "no" },
        ));
    }
    s
}

fn to_json(
    model: &str,
    workers: usize,
    threads: usize,
    (capacity, target): (usize, f64),
    rows: &[Row],
) -> String {
    let mut items = Vec::new();
    for r in rows {
        let wers: Vec<String> = r.streaming_wer.iter().map(|w| format!("{w:.4}")).collect();
        items.push(format!(
            "    {{\"file\": {}, \"audio_seconds\": {:.3}, \"streams\": {}, \"words\": {}, \"unmatched_words\": {}, \
             \"word_latency_p50_s\": {}, \"word_latency_p95_s\": {}, \"finals\": {}, \
             \"final_latency_p50_s\": {}, \"final_latency_p95_s\": {}, \
             \"final_from_last_word_p50_s\": {}, \"final_from_last_word_p95_s\": {}, \
             \"streaming_wer\": [{}], \"offline_wer\": {:.4}, \"offline_decode_s\": {:.3}, \
             \"end_of_audio_to_last_final_max_s\": {:.3}, \"load_average_1m\": {}, \"bench_cpu_share_cores\": {}, \"p95_under_threshold\": {}}}",
            json_str(&r.file),
            r.audio_seconds,
            r.streams,
            r.words,
            r.unmatched,
            json_num(r.word_p50),
            json_num(r.word_p95),
            r.finals,
            json_num(r.final_p50),
            json_num(r.final_p95),
            json_num(r.final_word_p50),
            json_num(r.final_word_p95),
            wers.join(", "),
            r.offline_wer,
            r.offline_seconds,
            r.tail_max,
            json_num(r.load),
            json_num(r.cpu_share),
            r.ok(),
        ));
    }
    format!(
        "{{\n  \"model\": {},\n  \"workers\": {workers},\n  \"threads_per_decode\": {threads},\n  \
         \"cores\": {},\n  \"threshold_s\": {target},\n  \"capacity_streams\": {capacity},\n  \
         \"rows\": [\n{}\n  ]\n}}\n",
        json_str(model),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        items.join(",\n"),
    )
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let root = workspace_root();
    let files = if args.files.is_empty() {
        vec![
            root.join("audio-fixtures/speech/long_60s.wav"),
            root.join("audio-fixtures/speech/pauses.wav"),
        ]
    } else {
        args.files.clone()
    };
    if args.streams.is_empty() || args.streams.contains(&0) {
        bail!("--streams: give counts of at least 1");
    }
    let most = args.streams.iter().copied().max().unwrap_or(1);

    let mut flags = vec![
        "transcribe-server".to_owned(),
        "--model".to_owned(),
        args.model.clone(),
    ];
    if let Some(w) = args.workers {
        flags.extend(["--workers".to_owned(), w.to_string()]);
    }
    let mut config = ServerArgs::parse_from(&flags).validate()?;
    config.max_streams = config.max_streams.max(most);
    config.queue_depth = config.queue_depth.max(most);

    let spec = transcribe_models::ModelSpec::parse(&args.model)?;
    let model_path = transcribe_models::resolve(
        &spec,
        &transcribe_models::FetchOptions {
            quantizer: Some(transcribe_engine::quantize::quantize_rows),
            ..Default::default()
        },
    )?;

    // Offline references first, before the server competes for the cores.
    let mut inputs = Vec::new();
    for path in &files {
        let audio = transcribe_audio::decode_file(path)
            .with_context(|| format!("decoding {}", path.display()))?;
        let reference = std::fs::read_to_string(path.with_extension("txt"))
            .with_context(|| format!("reading the reference beside {}", path.display()))?;
        let off = offline(&model_path, &audio.samples, config.threads, &args.language)?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        eprintln!(
            "offline {name}: {} words in {:.2} s, WER {:.1}%",
            off.words.len(),
            off.seconds,
            100.0 * wer(&reference, &off.text).rate()
        );
        inputs.push((
            name,
            Arc::new(audio.samples),
            reference.trim().to_owned(),
            off,
        ));
    }

    let (workers, threads) = (config.workers, config.threads);
    let deadline = Instant::now() + Duration::from_secs(120);
    let (url, in_process) = if let Some(url) = &args.server {
        (url.clone(), None)
    } else {
        let loader = WhisperLoader::from_config(&config, Default::default())?;
        let server = transcribe_server::Server::new(config, Box::new(loader));
        let handle = server.handle();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        while !handle.is_serving() {
            if Instant::now() > deadline || task.is_finished() {
                bail!("the server did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (url, Some((stop, task)))
    };

    let options = StreamOptions {
        realtime: true,
        language: Some(args.language.clone()),
        ..StreamOptions::default()
    };
    // Warm-up: one short stream as fast as the server takes it.
    if let Some((_, samples, _, _)) = inputs.first() {
        let n = samples.len().min(5 * 16_000);
        let fast = StreamOptions {
            realtime: false,
            ..options.clone()
        };
        // A server started apart may still be loading its model: retry until the deadline.
        while let Err(e) = client::stream_samples(&url, &samples[..n], &fast, |_| {}).await {
            if Instant::now() > deadline {
                return Err(e).context(format!("warm-up stream to {url}"));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    let mut rows = Vec::new();
    for (name, samples, reference, off) in &inputs {
        let audio_seconds = samples.len() as f64 / f64::from(transcribe_core::SAMPLE_RATE);
        for &n in &args.streams {
            eprintln!("streaming {name} x{n} ({audio_seconds:.1} s, real time)...");
            let (wall0, cpu0) = (Instant::now(), cpu_seconds());
            let barrier = Arc::new(Barrier::new(n));
            let mut tasks = Vec::new();
            for i in 0..n {
                tasks.push(tokio::spawn(run_stream(
                    url.clone(),
                    samples.clone(),
                    options.clone(),
                    barrier.clone(),
                    Duration::from_secs_f64(args.stagger * i as f64),
                )));
            }
            let mut traces = Vec::new();
            for t in tasks {
                traces.push(t.await??);
            }
            if args.verbose {
                print_finals(&traces);
            }
            let mut row = measure(name, audio_seconds, reference, off, &traces);
            row.target = args.latency_target;
            row.cpu_share = cpu0
                .zip(cpu_seconds())
                .map(|(a, b)| (b - a) / wall0.elapsed().as_secs_f64());
            eprint!("{}", table(&args.model, std::slice::from_ref(&row)));
            let failed = !row.ok();
            rows.push(row);
            if args.until_fail && failed {
                break;
            }
        }
    }
    if let Some((stop, task)) = in_process {
        let _ = stop.send(());
        task.await??;
    }

    // Capacity: the largest N such that it and every smaller N tested pass on every file.
    let mut counts = args.streams.clone();
    counts.sort_unstable();
    counts.dedup();
    let mut capacity = 0;
    for n in counts {
        let passed = |name: &String| {
            rows.iter()
                .any(|r| r.streams == n && &r.file == name && r.ok())
        };
        if inputs.iter().all(|(name, ..)| passed(name)) {
            capacity = n;
        } else {
            break;
        }
    }

    println!("{}", table(&args.model, &rows));
    println!(
        "capacity ({}, {workers} worker(s), {threads} thread(s) per decode): {capacity} concurrent real-time stream(s) with p95 word and final latency < {} s",
        args.model, args.latency_target
    );
    let json_path = args
        .json
        .unwrap_or_else(|| root.join("target/bench/stream.json"));
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        &json_path,
        to_json(
            &args.model,
            workers,
            threads,
            (capacity, args.latency_target),
            &rows,
        ),
    )?;
    eprintln!("wrote {}", json_path.display());
    Ok(())
}
