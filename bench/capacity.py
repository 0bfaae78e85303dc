#!/usr/bin/env python3
"""Compute capacity of one `transcribe-server`: N live streams of real speech at once.

For each stream count N it starts the server, streams N copies of a speech track in real
time through N `transcribe --server URL --realtime` clients (the real CLI), and reads the
server's own per-decode log lines ("Decode done.": kind, queue wait, decode time, lag behind
the audio) over the steady part of the run. It reports, per N:

- decodes per second (partials and finals) that the streaming policy asked for and got;
- queue wait p50/p95 (from submission to a worker starting the decode);
- worker busy fraction (decode time over wall time times workers) and, where `nvidia-smi`
  answers, the GPU's busy fraction (its utilization.gpu, sampled every 200 ms);
- final lag p95: from an utterance's last audio arriving to its final decode done;
- on schedule: the share of partial steps (audio between a stream's consecutive partials of
  one utterance) no wider than the server's step (its "Streaming policy." line) rounded up
  to the client's 100 ms chunks (0.25 s: 0.3 s); the policy widens its step when decodes
  come back late;
- queue p95 in target (`waits_ok`, the count is sustained): queue wait p95 under the target
  (0.5 s by default) and no client failed; `--until-fail` stops at the first count that
  misses it;
- full cadence: at least 90% of the steps on schedule (against a server that does not log
  its step: partials per stream per second within 10% of the lightest run's); `keeps_up`
  is both.

Admission control: by default every client starts at once with the server's admission off
(`--admission-wait 0`), which measures what the card does when nothing is refused. With
`--admission-wait 500ms --stagger 0.5` the clients arrive 0.5 s apart at a server that
refuses streams while decodes fall behind (RESOURCE_EXHAUSTED); refused clients are
counted (`refused`), the rates are per admitted stream, and the measured window starts
once the last client has arrived.

The schedule is the streaming policy's own (VAD endpoints, a partial every step of new
audio), driven by real speech timing: the track is the speech fixtures joined with pauses,
and stream i starts i/N of the way into it, so utterance ends do not line up across streams.

With a random-weight model (`transcribe models synth`), pass `--max-tokens 64 --no-fallback`
to the server (after `--`): every decode then does bounded work, and no two decodes need to
agree, so the number measures compute, not luck. With real weights it measures the same
thing for the real text.

    python3 bench/capacity.py --server-bin target/release/transcribe-server \\
        --client-bin target/release/transcribe --model tiny.en --streams 1,2,4 \\
        --workers 1 --seconds 40 [--out capacity.jsonl] [-- --max-tokens 64 --no-fallback]

Prints a markdown table and appends one JSON line per N to --out.
"""

from __future__ import annotations

import argparse
import array
import datetime as dt
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench.py by path (`import bench` would find this folder): its free_port.
_spec = importlib.util.spec_from_file_location("bench_orchestrator", ROOT / "bench" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
FIXTURES = ROOT / "audio-fixtures" / "speech"
RATE = 16_000
# Seconds of silence between the joined clips: a pause that ends an utterance.
PAUSE_SECONDS = 0.8
# The first seconds of a run (streams starting, first utterances) are not measured.
WARMUP_SECONDS = 5.0

LINE = re.compile(r"^(\S+)\s+DEBUG\s.*Decode done\.(.*)$")
FIELD = re.compile(r"(\w+)=(\S+)")
STREAM = re.compile(r"request_id=([^\s}]+)")
POLICY_STEP = re.compile(r"Streaming policy\..*\bstep_ms=([0-9.]+)")
# The CLI's audio chunk with --realtime (client-lib's DEFAULT_CHUNK): partials can only be
# cut where a chunk ends.
CLIENT_CHUNK_SECONDS = 0.1
# Share of partial steps on schedule for a run to keep the schedule.
ON_SCHEDULE_SHARE = 0.9


def read_wav(path: Path) -> array.array:
    with wave.open(str(path)) as w:
        if w.getframerate() != RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: want 16 kHz mono 16-bit")
        samples = array.array("h")
        samples.frombytes(w.readframes(w.getnframes()))
        return samples


def speech_track(clips: list[Path], seconds: float) -> array.array:
    """The clips joined with pauses, repeated up to `seconds`."""
    pause = array.array("h", [0] * int(PAUSE_SECONDS * RATE))
    one = array.array("h")
    for clip in clips:
        one.extend(read_wav(clip))
        one.extend(pause)
    track = array.array("h")
    while len(track) < seconds * RATE:
        track.extend(one)
    return track[: int(seconds * RATE)]


def write_wav(path: Path, samples: array.array) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(samples.tobytes())


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    rank = max(1, min(len(values), int(-(-q * len(values) // 1))))
    return values[rank - 1]


def parse_time(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def decodes(log: Path) -> list[dict]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = LINE.match(line)
        if not m:
            continue
        fields = {k: v.strip('"') for k, v in FIELD.findall(m.group(2))}
        try:
            out.append(
                {
                    "at": parse_time(m.group(1)),
                    "kind": fields.get("kind", "?"),
                    "queued_ms": float(fields["queued_ms"]),
                    "inference_ms": float(fields["inference_ms"]),
                    "lag_ms": float(fields["lag_ms"]) if "lag_ms" in fields else None,
                    "audio_s": float(fields["audio_seconds"]) if "audio_seconds" in fields else None,
                    "stream": span.group(1) if (span := STREAM.search(line)) else None,
                }
            )
        except (KeyError, ValueError):
            continue
    return out


def policy_step(log: Path) -> float | None:
    """The partial step (seconds) the server's streams start from, from its "Streaming
    policy." line; None from a server that does not log it."""
    for line in log.read_text(errors="replace").splitlines():
        if m := POLICY_STEP.search(line):
            return float(m.group(1)) / 1e3
    return None


def partial_steps(rows: list[dict]) -> list[float]:
    """Audio (seconds) between each stream's consecutive partials of one utterance: a partial
    covering less audio than the one before starts a new utterance."""
    last: dict[str, float] = {}
    steps = []
    for d in rows:
        if d["kind"] == "final":
            last.pop(d["stream"], None)
            continue
        if d["kind"] != "partial" or d["stream"] is None or d["audio_s"] is None:
            continue
        before = last.get(d["stream"])
        if before is not None and d["audio_s"] > before:
            steps.append(round(d["audio_s"] - before, 3))
        last[d["stream"]] = d["audio_s"]
    return steps


def on_schedule(steps: list[float], step: float) -> float | None:
    """Share of `steps` no wider than `step` rounded up to whole client chunks (steps are
    counted in samples, so arrival jitter does not widen them: a wider step is the policy
    widening it, or a partial waiting for the stream's previous decode)."""
    if not steps:
        return None
    bound = -(-round(step / CLIENT_CHUNK_SECONDS, 6) // 1) * CLIENT_CHUNK_SECONDS + 1e-6
    return round(sum(s <= bound for s in steps) / len(steps), 3)


class GpuSampler:
    """utilization.gpu every 200 ms, with wall-clock times; nothing without nvidia-smi."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "200"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.samples.append((time.time(), float(line.strip().split(",")[0])))
            except ValueError:
                pass

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait()

    def busy(self, start: float, end: float) -> float | None:
        inside = [u for t, u in self.samples if start <= t <= end]
        return statistics.fmean(inside) / 100 if inside else None


def wait_ready(port: int, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode} while loading")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def run(args: argparse.Namespace, n: int, track: array.array, tmp: Path) -> dict:
    port = bench.free_port()
    log = tmp / f"server-{n}.log"
    env = dict(os.environ, RUST_LOG="info,transcribe_server::pipeline=debug", NO_COLOR="1")
    server_cmd = [args.server_bin, "--listen", f"127.0.0.1:{port}", "--model", args.model,
                  "--workers", str(args.workers), "--max-streams", str(max(n, 1) + 4),
                  "--admission-wait", str(args.admission_wait), *args.server_args]
    with open(log, "w") as log_file:
        server = subprocess.Popen(server_cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(port, server)
        files = []
        for i in range(n):
            shift = int(len(track) * i / n)
            f = tmp / f"stream-{n}-{i}.wav"
            write_wav(f, track[shift:] + track[:shift])
            files.append(f)
        gpu = GpuSampler()
        started = time.time()
        clients = []
        for i, f in enumerate(files):
            if i and args.stagger:
                time.sleep(max(0.0, started + i * args.stagger - time.time()))
            clients.append(subprocess.Popen(
                [args.client_bin, "--server", f"http://127.0.0.1:{port}", "--realtime",
                 "-l", args.language, "--format", "json", "--retry-for", "0", str(f)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        failures, refused = [], 0
        for c in clients:
            try:
                _, err = c.communicate(timeout=args.seconds * 3 + n * args.stagger + 120)
            except subprocess.TimeoutExpired:
                c.kill()
                _, err = c.communicate()
            if c.returncode != 0:
                if is_refusal(err or ""):
                    refused += 1
                else:
                    failures.append(err.strip().splitlines()[-1:] if err else ["?"])
        ended = time.time()
        gpu.stop()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    start, end = measured_window(started, n, args.stagger, args.seconds)
    window = [d for d in decodes(log) if start <= d["at"] <= end]
    span = end - start
    by_kind = {k: [d for d in window if d["kind"] == k] for k in ("partial", "final")}
    waits = [d["queued_ms"] / 1e3 for d in window]
    wait_p95 = percentile(waits, 0.95)
    final_lags = [d["lag_ms"] / 1e3 for d in by_kind["final"] if d["lag_ms"] is not None]
    step = policy_step(log)
    steps = partial_steps(window)
    row = {
        "step": "capacity",
        "model": Path(args.model).name,
        "streams": n,
        "workers": args.workers,
        "server_args": " ".join(args.server_args),
        # ggml's CUDA graphs (on in scripts/build-cuda's binaries unless this is set)
        "cuda_graphs": "off" if os.environ.get("GGML_CUDA_DISABLE_GRAPHS") else "on",
        "seconds_measured": round(span, 1),
        "decodes": len(window),
        "decodes_per_s": round(len(window) / span, 2),
        "partials_per_s": round(len(by_kind["partial"]) / span, 2),
        "finals_per_s": round(len(by_kind["final"]) / span, 2),
        # The policy widens its step when decodes come back late: fewer partials per stream.
        "partials_per_stream_s": round(len(by_kind["partial"]) / span / max(1, n - refused), 2),
        "policy_step_s": step,
        "partial_step_p50_s": percentile(steps, 0.5),
        "partial_step_p90_s": percentile(steps, 0.9),
        "on_schedule": on_schedule(steps, step) if step else None,
        "queue_wait_p50_s": percentile(waits, 0.5),
        "queue_wait_p95_s": wait_p95,
        "partial_ms_p50": percentile([d["inference_ms"] for d in by_kind["partial"]], 0.5),
        "final_ms_p50": percentile([d["inference_ms"] for d in by_kind["final"]], 0.5),
        "worker_busy": round(sum(d["inference_ms"] for d in window) / 1e3
                             / (span * args.workers), 3),
        "gpu_busy": gpu.busy(start, end),
        "final_lag_p95_s": percentile(final_lags, 0.95),
        "stagger_s": args.stagger,
        "admission_wait": args.admission_wait,
        "refused": refused,
        "client_failures": len(failures),
        "failure_examples": failures[:3],
        "wall_s": round(ended - started, 1),
    }
    return row


def measured_window(started: float, n: int, stagger: float, seconds: float) -> tuple[float, float]:
    """The steady part of a run: from the warm-up after the last client arrived until the
    first client's audio ran out (each streams `seconds`)."""
    start = started + (n - 1) * stagger + WARMUP_SECONDS
    end = started + seconds
    if end - start < 5.0:
        raise SystemExit(f"{n} clients {stagger} s apart leave under 5 s of {seconds} s "
                         "with all of them streaming: raise --seconds")
    return start, end


def is_refusal(stderr: str) -> bool:
    """Whether a client's error output is the server refusing the stream (RESOURCE_EXHAUSTED:
    "server overloaded: ..."), as opposed to any other failure."""
    text = stderr.lower()
    return any(s in text for s in ("overloaded", "resource_exhausted", "resourceexhausted",
                                   "resource exhausted"))


def waits_ok(row: dict, target: float) -> bool:
    """The issue's measure of a sustained count: queue wait p95 within `target` and no
    client failed."""
    wait = row["queue_wait_p95_s"]
    return wait is not None and wait <= target and not row["client_failures"]


def full_cadence(row: dict, reference: dict) -> bool:
    """The policy's schedule kept: at least ON_SCHEDULE_SHARE of the partial steps on
    schedule (`on_schedule`). A row without it (a server that does not log its step) is held
    to partials per stream per second within 10% of the lightest run's (`reference`), which
    a run cannot fail against itself."""
    share = row.get("on_schedule")
    if share is not None:
        return share >= ON_SCHEDULE_SHARE
    return row["partials_per_stream_s"] >= 0.9 * reference["partials_per_stream_s"]


def keeps_up(row: dict, reference: dict, target: float) -> bool:
    """Both: short queue waits and the full cadence."""
    return waits_ok(row, target) and full_cadence(row, reference)


def fmt(v, digits=2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def main() -> int:
    argv = sys.argv[1:]
    server_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, server_args = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server-bin", default=str(ROOT / "target/release/transcribe-server"))
    p.add_argument("--client-bin", default=str(ROOT / "target/release/transcribe"))
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--streams", default="1,2,4")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seconds", type=float, default=40.0,
                   help="audio per stream (the measured part starts after 5 s)")
    p.add_argument("--language", default="en")
    p.add_argument("--target", type=float, default=0.5, help="queue wait p95 that keeps up")
    p.add_argument("--admission-wait", default="0",
                   help="the server's --admission-wait during the run (0: admit every stream)")
    p.add_argument("--stagger", type=float, default=0.0,
                   help="seconds between client starts (with --admission-wait: arrivals)")
    p.add_argument("--until-fail", action="store_true",
                   help="stop at the first stream count whose queue wait p95 misses --target "
                        "(or whose clients fail)")
    p.add_argument("--clips", default="",
                   help="comma-separated WAV files [default: the speech fixtures]")
    p.add_argument("--out", help="append one JSON line per stream count here")
    args = p.parse_args(argv)
    args.server_args = server_args
    clips = ([Path(c) for c in args.clips.split(",") if c] or
             sorted(FIXTURES.glob("*.wav")))
    track = speech_track(clips, args.seconds)
    counts = [int(x) for x in args.streams.split(",")]
    for n in counts:
        measured_window(0.0, n, args.stagger, args.seconds)  # refuses too short a run now
    rows = []
    with tempfile.TemporaryDirectory(prefix="capacity-") as tmp:
        for n in counts:
            row = run(args, n, track, Path(tmp))
            reference = rows[0] if rows else row
            row["waits_ok"] = waits_ok(row, args.target)
            row["full_cadence"] = full_cadence(row, reference)
            row["keeps_up"] = keeps_up(row, reference, args.target)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
            if args.until_fail and not row["waits_ok"]:
                break
    print()
    print("| streams | workers | decodes/s (partial + final) | partials/stream/s "
          "| step p50 / p90 (s) | on schedule "
          "| queue wait p50 / p95 (s) | decode ms p50 partial / final | worker busy | GPU busy "
          "| final lag p95 (s) | queue p95 in target | full cadence |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:--:|:--:|")
    for r in rows:
        refused = f" ({r['refused']} refused)" if r["refused"] else ""
        print(f"| {r['streams']}{refused} | {r['workers']} | {fmt(r['decodes_per_s'])} "
              f"({fmt(r['partials_per_s'])} + {fmt(r['finals_per_s'])}) "
              f"| {fmt(r['partials_per_stream_s'])} "
              f"| {fmt(r['partial_step_p50_s'])} / {fmt(r['partial_step_p90_s'])} "
              f"| {fmt(r['on_schedule'])} "
              f"| {fmt(r['queue_wait_p50_s'])} / {fmt(r['queue_wait_p95_s'])} "
              f"| {fmt(r['partial_ms_p50'], 0)} / {fmt(r['final_ms_p50'], 0)} "
              f"| {fmt(r['worker_busy'])} | {fmt(r['gpu_busy'])} | {fmt(r['final_lag_p95_s'])} "
              f"| {'yes' if r['waits_ok'] else 'no'}"
              f"{'' if not r['client_failures'] else ' (' + str(r['client_failures']) + ' failed)'} "
              f"| {'yes' if r['full_cadence'] else 'no'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
