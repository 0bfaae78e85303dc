"""A transcribe fleet on one machine: N real `transcribe-server` replicas (tiny.en) on
loopback behind a real nginx running deploy/nginx (only its listen ports and upstream
addresses rewritten), and real `transcribe --server` CLI clients.

Used by test_fleet.py (the five fleet checks) and, run as a script, to measure the fleet
(BENCHMARKS.md "A fleet behind nginx"):

    target/deploy-venv/bin/python tests/deploy/fleet.py [--kills 8] [--out FILE.json]

measures the resume time after SIGKILL (p50/p95 over several kills), the audio lost and the
words repeated at each seam, and the throughput of three replicas against one.

Binaries: TRANSCRIBE_SERVER_BIN (else target/release/transcribe-server) and the
`transcribe` CLI next to it. The model: tiny.en from the cache (scripts/test pulls it).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "audio-fixtures" / "speech"
MODEL = "tiny.en"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_manifests import free_ports, install_nginx, local_listeners, nginx_binary  # noqa: E402

# core's text normalisation and WER, as bench/bench.py ports them.
_spec = importlib.util.spec_from_file_location("bench_orchestrator", ROOT / "bench" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

RESUMED = re.compile(r"^resumed after ([0-9.]+) s$")
RESUMING = re.compile(r"; resuming from ([0-9.]+) s in ([0-9.]+) s$")


def tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as e:
        return f"({e})"


def server_binary() -> Path:
    env = os.environ.get("TRANSCRIBE_SERVER_BIN")
    path = Path(env) if env else ROOT / "target" / "release" / "transcribe-server"
    return path if path.is_absolute() else ROOT / path


def cli_binary() -> Path:
    return server_binary().parent / "transcribe"


def http_get(port: int, path: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text -> {(name, labels): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)", line)
        if not m:
            continue
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def metric_sum(metrics: dict, name: str, **labels) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= ls)


# ---- audio ------------------------------------------------------------------------------

def read_wav(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2), path
        return w.readframes(w.getnframes())


def write_wav(path: Path, frames: bytes) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(frames)
    return path


def clip(folder: Path, names: list[str], name: str, gap: float = 0.5) -> tuple[Path, str, float]:
    """The fixtures `names` one after another (gap seconds of silence between): the WAV, its
    reference text and its length in seconds."""
    silence = b"\0\0" * int(16000 * gap)
    frames = silence.join(read_wav(FIXTURES / f"{n}.wav") for n in names)
    text = " ".join((FIXTURES / f"{n}.txt").read_text().strip() for n in names)
    return write_wav(folder / name, frames), text, len(frames) / 2 / 16000


def align(reference: list[str], hypothesis: list[str]) -> dict[str, int]:
    """Word alignment counts: substitutions, deletions (reference words missing),
    insertions (extra words)."""
    n, m = len(reference), len(hypothesis)
    d = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        d[i][0] = i
    for j in range(m + 1):
        d[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = 0 if reference[i - 1] == hypothesis[j - 1] else 1
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
    counts = {"sub": 0, "del": 0, "ins": 0}
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            counts["sub"] += reference[i - 1] != hypothesis[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and d[i][j] == d[i - 1][j] + 1:
            counts["del"] += 1
            i -= 1
        else:
            counts["ins"] += 1
            j -= 1
    return counts


def words(text: str) -> list[str]:
    return bench.normalize(text).split()


def repeats(text: str, reference: str, span: int = 4) -> int:
    """Runs of 1..span words that the text says twice in a row where the reference does
    not: what a seam that sent audio twice would print."""
    def doubled(ws):
        found = set()
        for k in range(1, span + 1):
            for i in range(len(ws) - 2 * k + 1):
                if ws[i:i + k] == ws[i + k:i + 2 * k]:
                    found.add(tuple(ws[i:i + k]))
        return found
    return len(doubled(words(text)) - doubled(words(reference)))


# ---- processes --------------------------------------------------------------------------

class Replica:
    def __init__(self, folder: Path, index: int, port: int, max_streams: int, extra: list[str]):
        self.index = index
        self.port = port
        self.max_streams = max_streams
        self.extra = extra
        self.log_path = folder / f"replica{index}.log"
        self.proc: subprocess.Popen | None = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(server_binary()), "--listen", f"127.0.0.1:{self.port}", "--model", MODEL,
             "--max-streams", str(self.max_streams), "--drain-timeout", "20", *self.extra],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TRANSCRIBE_OFFLINE": "1"})
        log.close()

    def wait_ready(self, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica {self.index} exited: {self.log_path.read_text()[-2000:]}")
            try:
                if http_get(self.port, "/readyz", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"replica {self.index} not ready: {self.log_path.read_text()[-2000:]}")

    def metrics(self) -> dict:
        return parse_metrics(http_get(self.port, "/metrics")[1])

    def open_streams(self) -> float:
        try:
            return metric_sum(self.metrics(), "transcribe_open_calls", door="grpc", kind="stream")
        except OSError:
            return 0.0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Fleet:
    """`replicas` servers behind nginx; `url` is the balancer's plaintext gRPC port."""

    def __init__(self, folder: Path, replicas: int = 3, max_streams: int = 2,
                 extra: list[str] | None = None):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        ports = free_ports(replicas + 3)
        self.replicas = [Replica(folder, i, ports[i], max_streams, extra or []) for i in range(replicas)]
        self.ports = dict(zip(("tls", "h2c", "http"), ports[replicas:]))
        self.nginx: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['h2c']}"

    def _edit(self, name: str, text: str) -> str:
        if name != "transcribe.conf":
            return text
        text = local_listeners(text, self.ports)
        # The two documentation addresses of each upstream become the replicas.
        def servers(match):
            options = match.group(2)
            return "".join(f"{match.group(1)}server 127.0.0.1:{r.port}{options}\n" for r in self.replicas)
        text = re.sub(r"^(\s*)server 192\.0\.2\.11:50051(.*)\n", servers, text, flags=re.M)
        text = re.sub(r"^\s*server 192\.0\.2\.12:50051.*\n", "", text, flags=re.M)
        assert "192.0.2." not in re.sub(r"#.*", "", text)
        return text

    def start(self):
        if nginx_binary() is None:
            raise RuntimeError("nginx is not installed (scripts/setup installs it)")
        for r in self.replicas:
            r.start()
        wrapper = install_nginx(self.folder, self._edit)
        self.nginx = subprocess.Popen(
            [nginx_binary(), "-c", str(wrapper), "-p", f"{self.folder}/", "-g",
             "daemon off; master_process off;"],
            stdout=subprocess.DEVNULL, stderr=open(self.folder / "nginx.out", "wb"))
        # Up when all three listeners accept, nginx is still running a moment later and it
        # logged no failed bind: nginx binds its listeners one by one and retries a failed
        # bind for ~2.5 s before it exits, so accepting listeners alone (one of them maybe
        # another process's) do not mean it started.
        deadline = time.monotonic() + 10
        pending = set(self.ports.values())
        while pending:
            for port in list(pending):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    pending.discard(port)
                except OSError:
                    pass
            if pending:
                if self.nginx.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start:\n{self.explain()}")
                time.sleep(0.05)
        time.sleep(0.3)
        self.check_nginx()
        for r in self.replicas:
            r.wait_ready()
        return self

    def check_nginx(self):
        said = tail(self.folder / "nginx.out") + tail(self.folder / "error.log")
        if self.nginx is None or self.nginx.poll() is not None or "bind()" in said:
            raise RuntimeError(f"nginx is not running:\n{self.explain()}")

    def explain(self) -> str:
        """What each process said: for assertion messages."""
        parts = [f"nginx {'running' if self.nginx and self.nginx.poll() is None else 'exited'} "
                 f"on {self.ports}; its stderr: {tail(self.folder / 'nginx.out')}",
                 f"nginx error.log: {tail(self.folder / 'error.log')}",
                 f"nginx access log: {tail(self.folder / 'transcribe.access.log')}"]
        for r in self.replicas:
            state = "running" if r.alive() else f"exited ({r.proc.returncode if r.proc else 'not started'})"
            parts.append(f"replica {r.index} on {r.port}, {state}: {tail(r.log_path)}")
        return "\n".join(parts)

    def ensure_up(self):
        """Restarts replicas that exited (a previous check stopped or killed one)."""
        self.check_nginx()
        for r in self.replicas:
            if not r.alive():
                r.start()
        for r in self.replicas:
            r.wait_ready()

    def open_streams(self) -> list[float]:
        return [r.open_streams() if r.alive() else 0.0 for r in self.replicas]

    def wait_streams(self, total: int, timeout: float = 20) -> list[float]:
        deadline = time.monotonic() + timeout
        while True:
            counts = self.open_streams()
            if sum(counts) >= total or time.monotonic() > deadline:
                return counts
            time.sleep(0.05)

    def stop(self):
        for r in self.replicas:
            r.stop()
        if self.nginx and self.nginx.poll() is None:
            self.nginx.terminate()
            self.nginx.wait(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Client:
    """`transcribe --server URL FILE --format json`, its stderr read line by line with
    arrival times (monotonic)."""

    def __init__(self, url: str, wav: Path, realtime: bool = True, retry_for: float = 30):
        args = [str(cli_binary()), "--server", url, "--format", "json", "--retry-for", str(retry_for)]
        if realtime:
            args.append("--realtime")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args + [str(wav)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self._stdout: list[str] = []
        # One reader per pipe (communicate() would race the stderr reader for lines).
        self._readers = [threading.Thread(target=self._read_stderr, daemon=True),
                         threading.Thread(target=self._read_stdout, daemon=True)]
        for reader in self._readers:
            reader.start()
        self.out = ""

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def _read_stdout(self):
        self._stdout.append(self.proc.stdout.read())

    def wait(self, timeout: float = 180) -> "Client":
        self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        self.out = "".join(self._stdout)
        return self

    @property
    def rc(self) -> int:
        return self.proc.returncode

    @property
    def text(self) -> str:
        try:
            return json.loads(self.out)["text"]
        except (ValueError, KeyError):
            return ""

    def resumes(self) -> list[str]:
        return [l for _, l in self.lines if RESUMING.search(l)]

    def resumed(self) -> list[tuple[float, float]]:
        """(arrival time, the client's own gap in seconds) of each 'resumed after' line."""
        return [(t, float(m.group(1))) for t, l in self.lines if (m := RESUMED.match(l))]

    def stderr(self) -> str:
        return "\n".join(l for _, l in self.lines)


# ---- the measurement --------------------------------------------------------------------

def kill_round(fleet: Fleet, wav: Path, reference: str, sig: int, at: float) -> dict:
    """Three realtime clients of `wav`, one per replica; `sig` to replica 0 `at` seconds
    in. What the client on it saw against the others."""
    fleet.ensure_up()
    clients = [Client(fleet.url, wav) for _ in fleet.replicas]
    counts = fleet.wait_streams(len(clients))
    time.sleep(max(0.0, at - (time.monotonic() - clients[0].started)))
    victim = fleet.replicas[0]
    before = victim.open_streams()
    killed_at = time.monotonic()
    os.kill(victim.proc.pid, sig)
    for c in clients:
        c.wait()
    victim.proc.wait(timeout=40)
    moved = [c for c in clients if c.resumes()]
    stayed = [c for c in clients if not c.resumes()]
    result = {"spread": counts, "victim_streams": before, "victim_exit": victim.proc.returncode,
              "rcs": [c.rc for c in clients], "moved": len(moved), "clients": []}
    if sum(counts) < len(clients):
        result["explain"] = fleet.explain()
    for c in clients:
        errors, n = bench.wer_counts(reference, c.text)
        entry = {"moved": c in moved, "rc": c.rc, "wer": errors / n, "text": c.text,
                 "stderr": c.stderr(), "repeats": repeats(c.text, reference)}
        if c in moved and stayed:
            entry["against_unmoved"] = align(words(stayed[0].text), words(c.text))
        if c in moved:
            entry["kill_to_resumed"] = [t - killed_at for t, _ in c.resumed()]
            entry["gaps"] = [g for _, g in c.resumed()]
        result["clients"].append(entry)
    return result


def throughput(fleet_folder: Path, replicas: int, wav: Path, seconds: float, streams: int,
               extra: list[str] | None = None) -> dict:
    """`streams` clients sending `wav` as fast as the servers take it, all at once, through
    nginx to `replicas` replicas (started with `extra` flags): audio seconds per wall
    second."""
    with Fleet(fleet_folder, replicas=replicas, max_streams=streams, extra=extra) as fleet:
        started = time.monotonic()
        clients = [Client(fleet.url, wav, realtime=False) for _ in range(streams)]
        for c in clients:
            c.wait()
        wall = time.monotonic() - started
    assert all(c.rc == 0 for c in clients), [c.stderr() for c in clients]
    return {"replicas": replicas, "flags": extra or [], "streams": streams, "wall": wall,
            "audio_per_wall": streams * seconds / wall}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=8, help="SIGKILL rounds (default 8; 0: throughput only)")
    parser.add_argument("--streams", type=int, default=6, help="streams in the throughput runs")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="transcribe-fleet-"))
    wav, reference, seconds = clip(folder, ["pauses", "dog", "market"], "seam.wav")
    rounds = []
    with Fleet(folder / "kills") if args.kills else contextlib.nullcontext() as fleet:
        for k in range(args.kills):
            at = 4.0 + (k * 7 % 9)  # 4..12 s in, spread over the clip
            r = kill_round(fleet, wav, reference, signal.SIGKILL, at)
            r["at"] = at
            rounds.append(r)
            moved = [c for c in r["clients"] if c["moved"]]
            print(f"kill {k + 1} at {at:.0f} s: spread {r['spread']}, moved {len(moved)}, "
                  + ", ".join(f"gap {c['gaps']} kill->resumed {[round(x, 2) for x in c['kill_to_resumed']]} "
                              f"wer {c['wer']:.3f} vs-unmoved {c.get('against_unmoved')} repeats {c['repeats']}"
                              for c in moved), flush=True)
    gaps = [g for r in rounds for c in r["clients"] if c["moved"] for g in c["kill_to_resumed"][:1]]
    own = [g for r in rounds for c in r["clients"] if c["moved"] for g in c["gaps"][:1]]
    moved = [c for r in rounds for c in r["clients"] if c["moved"]]
    unmoved = [c for r in rounds for c in r["clients"] if not c["moved"]]
    tp_wav, _, tp_seconds = clip(folder, ["pauses"], "tp.wav")
    one = throughput(folder / "one", 1, tp_wav, tp_seconds, args.streams)
    three = throughput(folder / "three", 3, tp_wav, tp_seconds, args.streams)
    # One replica using both cores, as three replicas of one worker each do together.
    one_wide = throughput(folder / "one-wide", 1, tp_wav, tp_seconds, args.streams, ["--workers", "2"])
    summary = {
        "kills": len(rounds),
        "resumed_after_kill_p50": percentile(gaps, 0.5), "resumed_after_kill_p95": percentile(gaps, 0.95),
        "client_gap_p50": percentile(own, 0.5), "client_gap_p95": percentile(own, 0.95),
        "moved_wer_median": statistics.median(c["wer"] for c in moved) if moved else None,
        "unmoved_wer_median": statistics.median(c["wer"] for c in unmoved) if unmoved else None,
        "moved_deletions_vs_unmoved": sum(c.get("against_unmoved", {}).get("del", 0) for c in moved),
        "moved_insertions_vs_unmoved": sum(c.get("against_unmoved", {}).get("ins", 0) for c in moved),
        "seam_repeats": sum(c["repeats"] for c in moved),
        "failed_clients": sum(1 for r in rounds for rc in r["rcs"] if rc != 0),
        "throughput_one": one, "throughput_three": three,
        "throughput_one_two_workers": one_wide,
        "throughput_ratio": three["audio_per_wall"] / one["audio_per_wall"],
        "throughput_ratio_two_workers": three["audio_per_wall"] / one_wide["audio_per_wall"],
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=2))


if __name__ == "__main__":
    main()
