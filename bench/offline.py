"""Offline benchmark driver behind scripts/bench-offline: our `transcribe` against
faster-whisper (bench/fw_transcribe.py) on the same files and weights.

For every model, clip and run it runs ours, then faster-whisper (alternating, so both see
the same background load), each as its own process under `/usr/bin/time -v`, and records:
- RTF: processing seconds / audio seconds, model load excluded. Ours: the JSON's
  `processing_time` (file decoding + inference). faster-whisper: the `transcribe()` call
  with its segment generator consumed (file decoding + inference).
- load: ours, process wall time minus `processing_time` (process start, model load, output);
  faster-whisper, the `WhisperModel(...)` constructor (its Python imports are reported
  apart as `import_s`).
- peak RSS: `/usr/bin/time -v` "Maximum resident set size" of the whole process.
- WER against the reference after normalisation (lowercase, punctuation stripped, as
  core/src/text.rs `normalize`).
Medians over the runs go to OUT/offline.json and OUT/offline.md.

Standard library only.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "audio-fixtures" / "speech" / "long_60s.wav"
EVAL = ROOT.parent / "shared" / "eval"


# ---- text normalisation and WER: a port of core/src/text.rs ----------------------------

def normalize(text: str) -> str:
    """Lowercase, punctuation removed (apostrophes inside words kept), whitespace collapsed."""
    out = []
    n = len(text)
    for i, c in enumerate(text):
        if c.isalnum():
            keep = True
        elif c in ("'", "\u2019"):
            keep = i > 0 and text[i - 1].isalnum() and i + 1 < n and text[i + 1].isalnum()
        else:
            keep = False
        if keep:
            out.append("'" if c == "\u2019" else c.lower())
        else:
            out.append(" ")
    return " ".join("".join(out).split())


def edit_distance(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a):
        cur = [i + 1] + [0] * len(b)
        for j, y in enumerate(b):
            cur[j + 1] = min(prev[j] + (x != y), prev[j + 1] + 1, cur[j] + 1)
        prev = cur
    return prev[len(b)]


def wer(reference: str, hypothesis: str):
    r = normalize(reference).split()
    h = normalize(hypothesis).split()
    return edit_distance(r, h), len(r)


# ---- inputs ---------------------------------------------------------------------------------

def clips(use_eval: bool):
    out = [{"id": "long_60s", "path": str(FIXTURE), "reference": FIXTURE.with_suffix(".txt").read_text().strip(),
            "source": "audio-fixtures (espeak-ng)", "ref_quality": "exact"}]
    manifest = EVAL / "manifest.tsv"
    if not use_eval:
        return out
    if not manifest.exists():
        print(f"offline.py: {manifest} absent, benchmarking the fixture only", file=sys.stderr)
        return out
    with manifest.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["category"] == "B_long" and row["language"] == "en" and row["reference"]:
                out.append({"id": row["id"], "path": str(EVAL / row["wav16k"]), "reference": row["reference"],
                            "source": "shared/eval", "ref_quality": row["ref_quality"]})
    return out


# ---- one run --------------------------------------------------------------------------------

def peak_rss_mb(time_v: str) -> float:
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_v)
    return int(m.group(1)) / 1024 if m else float("nan")


def timed(cmd):
    """Runs cmd under /usr/bin/time -v; returns (stdout, wall seconds, peak RSS MB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-v", "-o", tf.name, *cmd], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
        return p.stdout, wall, peak_rss_mb(tf.read())


def run_ours(args, model, clip):
    stdout, wall, rss = timed([args.transcribe, "--model", model["ggml"], "--threads", str(args.threads),
                               "--format", "json", "--no-progress", clip["path"]])
    j = json.loads(stdout)
    return {"processing_s": j["processing_time"], "audio_s": j["audio_duration"],
            "load_s": wall - j["processing_time"], "wall_s": wall, "rss_mb": rss,
            "language": j.get("language"), "text": j["text"]}


def run_fw(args, model, clip):
    stdout, wall, rss = timed([args.python, str(ROOT / "bench" / "fw_transcribe.py"), model["ct2"], clip["path"],
                               "--threads", str(args.threads)])
    j = json.loads(stdout)
    return {"processing_s": j["processing_s"], "audio_s": j["audio_s"], "load_s": j["load_s"],
            "import_s": j["import_s"], "wall_s": wall, "rss_mb": rss, "language": j.get("language"),
            "text": j["text"]}


# ---- report ---------------------------------------------------------------------------------

def med(runs, key):
    return statistics.median(r[key] for r in runs)


def summarize(runs, reference):
    errors, words = wer(reference, runs[-1]["text"])
    rtfs = [r["processing_s"] / r["audio_s"] for r in runs]
    return {
        "runs": len(runs), "rtf": statistics.median(rtfs), "rtf_all": rtfs,
        "processing_s": med(runs, "processing_s"), "load_s": med(runs, "load_s"),
        "wall_s": med(runs, "wall_s"), "rss_mb": med(runs, "rss_mb"),
        "wer": errors / words if words else float(errors), "errors": errors, "reference_words": words,
        "texts_identical_across_runs": len({r["text"] for r in runs}) == 1,
        "language": runs[-1].get("language"), "text": runs[-1]["text"],
        **({"import_s": med(runs, "import_s")} if "import_s" in runs[0] else {}),
    }


def machine():
    model = ""
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "os": platform.platform()}


def git_commit():
    def git(*a):
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short=12", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + (" (+uncommitted changes in the tree)" if dirty else "")


def versions(args):
    out = {}
    v = subprocess.run([args.transcribe, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"whisper\.cpp [0-9.]+", v)
    out["ours"] = (v.splitlines()[0] if v else "?") + (f", {m.group(0)}" if m else "")
    v = subprocess.run([args.python, "-c", "import faster_whisper, ctranslate2; "
                        "print(faster_whisper.__version__, ctranslate2.__version__)"],
                       capture_output=True, text=True).stdout.split()
    out["faster_whisper"] = f"faster-whisper {v[0]}, ctranslate2 {v[1]}" if len(v) == 2 else "?"
    return out


def markdown(doc):
    lines = [
        f"Machine: {doc['machine']['cpu']}, {doc['machine']['cores']} cores; commit {doc['commit']}; "
        f"{doc['date']}; {doc['runs']} runs each, medians, alternating ours / faster-whisper.",
        f"Ours: {doc['versions']['ours']}, f16 ggml, greedy, {doc['threads']} threads. "
        f"Peer: {doc['versions']['faster_whisper']}, int8, greedy, cpu_threads {doc['threads']}. "
        "Both: word timestamps on, no VAD, no previous-text conditioning, temperature fallback.",
        "",
        "| model | clip | audio s | RTF ours | RTF fw int8 | ours/fw | load s ours | load s fw | "
        "peak RSS MB ours | peak RSS MB fw | WER ours | WER fw |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        o, f = r["ours"], r["faster_whisper"]
        lines.append(
            f"| {r['model']} | {r['clip']} | {r['audio_s']:.1f} | {o['rtf']:.3f} | {f['rtf']:.3f} | "
            f"{o['rtf'] / f['rtf']:.2f} | {o['load_s']:.2f} | {f['load_s']:.2f} | {o['rss_mb']:.0f} | "
            f"{f['rss_mb']:.0f} | {o['wer']:.3f} | {f['wer']:.3f} |")
    for t in doc["totals"]:
        lines.append(
            f"| {t['model']} | **all {t['clips']} clips** | {t['audio_s']:.1f} | {t['rtf_ours']:.3f} | "
            f"{t['rtf_fw']:.3f} | {t['rtf_ours'] / t['rtf_fw']:.2f} | | | | | {t['wer_ours']:.3f} | "
            f"{t['wer_fw']:.3f} |")
    lines += ["", f"Command: `{doc['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--transcribe", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", action="append", required=True, help="NAME=GGML_FILE=CT2_DIR")
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="scripts/bench-offline")
    args = ap.parse_args()

    models = []
    for spec in args.model:
        name, ggml, ct2 = spec.split("=", 2)
        models.append({"name": name, "ggml": ggml, "ct2": ct2})
    todo = clips(not args.no_eval)
    commit = git_commit()  # the tree the binary was just built from
    raw = {}
    for rep in range(args.runs):
        for model in models:
            for clip in todo:
                for side, fn in (("ours", run_ours), ("faster_whisper", run_fw)):
                    load = os.getloadavg()[0]
                    r = fn(args, model, clip)
                    r["loadavg_1m_before"] = load
                    raw.setdefault((model["name"], clip["id"], side), []).append(r)
                    print(f"run {rep + 1}/{args.runs} {model['name']:8} {clip['id']:28} {side:15} "
                          f"rtf {r['processing_s'] / r['audio_s']:.3f} load {r['load_s']:.2f}s "
                          f"rss {r['rss_mb']:.0f} MB (loadavg {load:.2f})", file=sys.stderr, flush=True)

    results, totals = [], []
    for model in models:
        per_run = {"ours": [0.0] * args.runs, "faster_whisper": [0.0] * args.runs}
        errs = {"ours": 0, "faster_whisper": 0}
        audio, words = 0.0, 0
        for clip in todo:
            entry = {"model": model["name"], "clip": clip["id"], "source": clip["source"],
                     "ref_quality": clip["ref_quality"]}
            for side in ("ours", "faster_whisper"):
                runs = raw[(model["name"], clip["id"], side)]
                entry[side] = summarize(runs, clip["reference"])
                entry[side]["raw"] = runs
                for i, r in enumerate(runs):
                    per_run[side][i] += r["processing_s"]
                errs[side] += entry[side]["errors"]
            entry["audio_s"] = entry["ours"]["raw"][0]["audio_s"]
            audio += entry["audio_s"]
            words += entry["ours"]["reference_words"]
            results.append(entry)
        totals.append({"model": model["name"], "clips": len(todo), "audio_s": audio,
                       "rtf_ours": statistics.median(per_run["ours"]) / audio,
                       "rtf_fw": statistics.median(per_run["faster_whisper"]) / audio,
                       "wer_ours": errs["ours"] / words, "wer_fw": errs["faster_whisper"] / words})

    doc = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit, "machine": machine(), "versions": versions(args),
        "command": args.command, "runs": args.runs, "threads": args.threads,
        "models": models, "results": results, "totals": totals,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "offline.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    md = markdown(doc)
    (out / "offline.md").write_text(md)
    print(md)
    print(f"offline.py: wrote {out / 'offline.json'} and {out / 'offline.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
