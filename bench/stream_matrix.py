"""Runs engine/examples/stream_sim over models x thread counts, alternating, and writes the
medians to OUT/stream_sim.json and OUT/stream_sim.md (BENCHMARKS.md, "Choosing the CPU default
model").

Usage (from the workspace root):
  python3 bench/stream_matrix.py [--runs 3] [--wav audio-fixtures/speech/long_60s.wav]
                                 [--models tiny.en,base] [--threads 1,2] [--out target/bench]
                                 [--language en] [--extra-auto]

Each model's ggml file is `target/release/transcribe models pull NAME`. Runs go round the
whole matrix once per repetition (tiny.en/1, base/1, tiny.en/2, base/2, tiny.en/1, ...), so
every configuration sees the same mix of background load. `--extra-auto` adds base with
language detection (no --language), the policy's default for a multilingual model.

Standard library only.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))

KEYS = [
    "compute_load", "partial_jobs", "final_jobs", "finals", "max_length_finals", "decode_failures",
    "decode_ms_mean", "decode_ms_p95", "partial_decode_ms_mean", "partial_decode_ms_p95",
    "final_decode_ms_mean", "final_decode_ms_p95", "final_latency_s_p50", "final_latency_s_p95",
    "final_after_endpoint_s_p50", "final_after_endpoint_s_p95", "emission_seen_s_p50",
    "emission_seen_s_p95", "emission_committed_s_p50", "emission_committed_s_p95", "step_s_median",
    "step_s_max", "steps_widened", "steps", "stream_wer", "offline_wer", "offline_rtf", "model_load_s",
]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--wav", default=str(ROOT / "audio-fixtures" / "speech" / "long_60s.wav"))
    ap.add_argument("--models", default="tiny.en,base")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--language", default="en", help="passed to stream_sim; 'auto' detects")
    ap.add_argument("--extra-auto", action="store_true")
    ap.add_argument("--out", default=str(TARGET / "bench"))
    args = ap.parse_args()

    # The binary is built from the working tree as it is now: record that state.
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no",
                            "core", "engine"], capture_output=True, text=True).stdout.strip()
    if dirty:
        commit += " (+uncommitted changes in core/ or engine/)"
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "transcribe-engine", "--example", "stream_sim"],
                   cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "transcribe-cli", "--bin", "transcribe"],
                   cwd=ROOT, check=True)
    sim = TARGET / "release" / "examples" / "stream_sim"
    transcribe = TARGET / "release" / "transcribe"
    paths = {}
    for m in args.models.split(","):
        out = subprocess.run([transcribe, "models", "pull", m], capture_output=True, text=True, check=True)
        paths[m] = out.stdout.strip().splitlines()[-1]

    configs = [(m, int(t), args.language) for t in args.threads.split(",") for m in args.models.split(",")]
    if args.extra_auto and "base" in paths:
        configs.append(("base", 1, "auto"))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = {}
    for rep in range(args.runs):
        for model, threads, lang in configs:
            tmp = out_dir / "stream_sim_last.json"
            cmd = [str(sim), paths[model], args.wav, "--threads", str(threads), "--json", str(tmp)]
            if lang != "auto":
                cmd += ["--language", lang]
            load = os.getloadavg()[0]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            r = json.loads(tmp.read_text())
            r["loadavg_1m_before"] = load
            raw.setdefault(f"{model}/{threads}/{lang}", []).append(r)
            print(f"run {rep + 1}/{args.runs} {model:8} threads {threads} lang {lang:4}: load "
                  f"{r['compute_load']:.3f}, final p95 {fmt(r['final_latency_s_p95'])} s, "
                  f"WER {fmt(r['stream_wer'], 3)} (loadavg {load:.2f})", file=sys.stderr, flush=True)

    rows = []
    for (model, threads, lang) in configs:
        runs = raw[f"{model}/{threads}/{lang}"]
        row = {"model": model, "threads": threads, "language": lang, "runs": runs}
        for k in KEYS:
            row[k] = median([r.get(k) for r in runs])
        rows.append(row)

    cpu = next((l.split(":", 1)[1].strip() for l in subprocess.run(["lscpu"], capture_output=True, text=True)
                .stdout.splitlines() if l.startswith("Model name:")), "?")
    doc = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "commit": commit, "machine": {"cpu": cpu, "cores": os.cpu_count()}, "wav": args.wav,
           "runs": args.runs, "command": "python3 bench/stream_matrix.py " + " ".join(sys.argv[1:]),
           "rows": rows}
    (out_dir / "stream_sim.json").write_text(json.dumps(doc, indent=2) + "\n")

    lines = [
        f"Machine: {cpu}, {os.cpu_count()} cores; commit {commit}; {doc['date']}; "
        f"{Path(args.wav).name}; medians of {args.runs} runs.",
        "",
        "| model | threads | language | compute load | partial jobs | final jobs | decode ms mean / p95 | "
        "final latency s p50 / p95 | final after endpoint s p50 / p95 | word shown s p50 / p95 | "
        "word committed s p50 / p95 | step s median / max (widened) | stream WER | offline WER |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['threads']} | {r['language']} | {fmt(r['compute_load'], 3)} | "
            f"{fmt(r['partial_jobs'], 0)} | {fmt(r['final_jobs'], 0)} | "
            f"{fmt(r['decode_ms_mean'], 0)} / {fmt(r['decode_ms_p95'], 0)} | "
            f"{fmt(r['final_latency_s_p50'])} / {fmt(r['final_latency_s_p95'])} | "
            f"{fmt(r['final_after_endpoint_s_p50'])} / {fmt(r['final_after_endpoint_s_p95'])} | "
            f"{fmt(r['emission_seen_s_p50'])} / {fmt(r['emission_seen_s_p95'])} | "
            f"{fmt(r['emission_committed_s_p50'])} / {fmt(r['emission_committed_s_p95'])} | "
            f"{fmt(r['step_s_median'])} / {fmt(r['step_s_max'])} ({fmt(r['steps_widened'], 0)}/{fmt(r['steps'], 0)}) | "
            f"{fmt(r['stream_wer'], 3)} | {fmt(r['offline_wer'], 3)} |")
    lines += ["", f"Command: `{doc['command']}`", ""]
    md = "\n".join(lines)
    (out_dir / "stream_sim.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
