"""Tests of bench/bench.py's pure parts and of the whisper.cpp C driver.

Run: python3 -m unittest bench/test_bench.py   (from the workspace root; seconds, except the
C driver test, which transcribes one short fixture with tiny.en and is skipped when the
static libraries or the cached model are absent).
"""

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from types import SimpleNamespace

# Loaded by path: `python3 -m unittest bench/test_bench.py` would resolve `import bench` to the
# bench/ folder itself.
_spec = importlib.util.spec_from_file_location("bench_orchestrator", Path(__file__).resolve().parent / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


_cap_spec = importlib.util.spec_from_file_location("capacity", Path(__file__).resolve().parent / "capacity.py")
capacity = importlib.util.module_from_spec(_cap_spec)
_cap_spec.loader.exec_module(capacity)


class Capacity(unittest.TestCase):
    def test_reads_the_servers_decode_lines(self):
        log = "\n".join([
            "2026-12-04T00:42:01.500000Z  INFO transcribe_server: Listening. addr=127.0.0.1:1",
            "2026-12-04T00:42:02.250000Z DEBUG transcribe_server::pipeline: Decode done. job=3 "
            'kind="partial" audio_seconds=1.5 queued_ms=0.05 inference_ms=216.9 lag_ms=230.1',
            "2026-12-04T00:42:03.000000Z DEBUG transcribe_server::pipeline: Decode done. job=4 "
            'kind="final" audio_seconds=2.5 queued_ms=120.5 inference_ms=1339.8',
        ])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "server.log"
            path.write_text(log)
            rows = capacity.decodes(path)
        self.assertEqual([r["kind"] for r in rows], ["partial", "final"])
        self.assertAlmostEqual(rows[1]["at"] - rows[0]["at"], 0.75)
        self.assertEqual((rows[0]["queued_ms"], rows[0]["lag_ms"]), (0.05, 230.1))
        self.assertIsNone(rows[1]["lag_ms"])

    def test_reads_the_step_and_each_streams_partials(self):
        def partial(at, stream, audio):
            return (f"2026-12-04T00:42:{at:06.3f}Z DEBUG stream{{request_id={stream} "
                    f"peer=127.0.0.1:5}}: transcribe_server::pipeline: Decode done. job=1 "
                    f'kind="partial" audio_seconds={audio} queued_ms=0.1 inference_ms=20.0 lag_ms=21.0')
        log = "\n".join([
            "2026-12-04T00:42:00.000000Z  INFO transcribe_server: Streaming policy. step_ms=250.0 "
            "max_step_ms=3000.0 min_partial_ms=500.0",
            partial(1.0, "a-1", 0.5), partial(1.1, "b-2", 0.5), partial(1.3, "a-1", 0.8),
            partial(1.5, "b-2", 1.4),  # b widened its step: 0.9 s
            "2026-12-04T00:42:01.600000Z DEBUG stream{request_id=a-1 peer=x}: "
            'transcribe_server::pipeline: Decode done. job=2 kind="final" audio_seconds=1.0 '
            "queued_ms=0.1 inference_ms=50.0 lag_ms=60.0",
            partial(2.0, "a-1", 0.5),  # a new utterance: no step
            partial(2.3, "a-1", 0.8),
        ])
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "server.log"
            path.write_text(log)
            rows = capacity.decodes(path)
            self.assertEqual(capacity.policy_step(path), 0.25)
        self.assertEqual([r["stream"] for r in rows][:2], ["a-1", "b-2"])
        steps = capacity.partial_steps(rows)
        self.assertEqual([round(s, 3) for s in steps], [0.3, 0.9, 0.3])
        # 0.25 s rounds up to 3 chunks of 0.1 s.
        self.assertAlmostEqual(capacity.on_schedule(steps, 0.25), 0.667)
        self.assertAlmostEqual(capacity.on_schedule([0.3, 0.4, 0.3, 0.3], 0.25), 0.75)
        self.assertEqual(capacity.on_schedule([0.5, 0.6, 0.5], 0.5), 0.667)
        self.assertIsNone(capacity.on_schedule([], 0.25))

    def test_reads_the_real_servers_policy_line(self):
        # The line capacity.py reads, as the server writes it (before any model loads).
        server = Path(os.environ.get("CARGO_TARGET_DIR", capacity.ROOT / "target")) / "release" / "transcribe-server"
        if not server.exists():
            self.skipTest(f"{server} is not built")
        port = capacity.bench.free_port()
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "server.log"
            with open(log, "w") as out:
                proc = subprocess.Popen(
                    [str(server), "--listen", f"127.0.0.1:{port}", "--model", "tiny.en",
                     "--step", "300ms"],
                    stdout=out, stderr=subprocess.STDOUT,
                    env=dict(os.environ, TRANSCRIBE_OFFLINE="1", NO_COLOR="1"))
            try:
                for _ in range(100):
                    if capacity.policy_step(log) is not None:
                        break
                    time.sleep(0.1)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            self.assertEqual(capacity.policy_step(log), 0.3, log.read_text()[-2000:])

    def test_nearest_rank_percentiles(self):
        values = [0.01 * i for i in range(1, 21)]
        self.assertAlmostEqual(capacity.percentile(values, 0.5), 0.10)
        self.assertAlmostEqual(capacity.percentile(values, 0.95), 0.19)
        self.assertIsNone(capacity.percentile([], 0.5))

    def test_keeps_up_needs_short_waits_and_the_schedule(self):
        ref = {"queue_wait_p95_s": 0.0, "partials_per_stream_s": 1.8, "client_failures": 0}
        ok = dict(ref, queue_wait_p95_s=0.4, partials_per_stream_s=1.65)
        self.assertTrue(capacity.keeps_up(ok, ref, 0.5))
        self.assertFalse(capacity.keeps_up(dict(ok, queue_wait_p95_s=0.6), ref, 0.5))
        self.assertFalse(capacity.keeps_up(dict(ok, partials_per_stream_s=1.3), ref, 0.5))
        self.assertFalse(capacity.keeps_up(dict(ok, client_failures=1), ref, 0.5))
        # With the server's step known, the schedule is the policy's, not another run's: the
        # lightest run can fail it too.
        self.assertTrue(capacity.keeps_up(dict(ok, on_schedule=0.95), ok, 0.5))
        self.assertFalse(capacity.keeps_up(dict(ok, on_schedule=0.6), ok, 0.5))
        self.assertFalse(capacity.keeps_up(dict(ok, on_schedule=0.95, queue_wait_p95_s=0.6), ok, 0.5))
        # The two halves apart: a saturated card keeps short waits with a widened step.
        slow = dict(ok, on_schedule=0.2)
        self.assertTrue(capacity.waits_ok(slow, 0.5))
        self.assertFalse(capacity.full_cadence(slow, ok))

    def test_the_window_starts_after_the_last_arrival(self):
        self.assertEqual(capacity.measured_window(100.0, 4, 0.0, 30.0),
                         (100.0 + capacity.WARMUP_SECONDS, 130.0))
        start, end = capacity.measured_window(100.0, 11, 2.0, 40.0)
        self.assertEqual((start, end), (100.0 + 20.0 + capacity.WARMUP_SECONDS, 140.0))
        with self.assertRaises(SystemExit):
            capacity.measured_window(0.0, 48, 0.5, 30.0)

    def test_refusals_are_told_from_other_failures(self):
        self.assertTrue(capacity.is_refusal(
            "error: server overloaded: decodes are falling behind: partial results took 0.61s"))
        self.assertTrue(capacity.is_refusal("status: ResourceExhausted, RESOURCE_EXHAUSTED"))
        self.assertFalse(capacity.is_refusal("error: transport error: connection refused"))
        self.assertFalse(capacity.is_refusal(""))

    def test_speech_track_joins_clips_with_pauses(self):
        clip = sorted(capacity.FIXTURES.glob("*.wav"))[0]
        one = len(capacity.read_wav(clip))
        track = capacity.speech_track([clip], 2 * (one / capacity.RATE + capacity.PAUSE_SECONDS))
        pause = int(capacity.PAUSE_SECONDS * capacity.RATE)
        self.assertEqual(len(track), 2 * (one + pause))
        self.assertEqual(set(track[one:one + pause]), {0})


class Text(unittest.TestCase):
    def test_normalize_matches_core(self):
        # The same cases as core/src/text.rs's tests.
        self.assertEqual(bench.normalize("Hello, World!  It's  me."), "hello world it's me")
        self.assertEqual(bench.normalize("3.5 per-cent"), "3 5 per cent")
        self.assertEqual(bench.normalize("don\u2019t 'quoted'"), "don't quoted")

    def test_wer_counts(self):
        self.assertEqual(bench.wer_counts("the cat sat", "The cat, sat."), (0, 3))
        self.assertEqual(bench.wer_counts("the cat sat", "a cat sat down"), (2, 3))
        self.assertEqual(bench.wer_counts("one two", ""), (2, 2))


class Inputs(unittest.TestCase):
    def test_fixture_clips_are_speech_with_references(self):
        clips = bench.fixture_clips()
        ids = {c["id"] for c in clips}
        self.assertIn("speech_long_60s", ids)
        self.assertFalse(any(i.startswith("signal_") for i in ids))
        for c in clips:
            self.assertTrue(Path(c["path"]).exists(), c["path"])
            self.assertTrue(c["reference"].strip())

    def test_corpus_clips_keep_english_rows_with_reference_and_existing_audio(self):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            (d / "wav16k").mkdir()
            for name in ("a", "b", "c", "d"):
                (d / "wav16k" / f"{name}.wav").write_bytes(b"RIFF")
            head = "id\tcategory\tlanguage\tduration_s\twav16k\treference\tref_quality\n"
            rows = [
                "a\tA_en_exact\ten\t1\twav16k/a.wav\tHello there\texact",
                "b\tD_non_en\tde\t1\twav16k/b.wav\tHallo\texact",
                "c\tE_format\ten\t1\twav16k/c.wav\tHello there\texact",
                "d\tB_long\ten\t1\twav16k/d.wav\t\t",
                "e\tB_long\ten\t1\twav16k/missing.wav\tGone\texact",
            ]
            (d / "manifest.tsv").write_text(head + "\n".join(rows) + "\n")
            clips = bench.corpus_clips(d)
        self.assertEqual([c["id"] for c in clips], ["a"])
        self.assertEqual(clips[0]["reference"], "Hello there")


class Measure(unittest.TestCase):
    def test_run_measured_reports_the_child_peak_rss(self):
        code = "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('done')"
        out, _, wall, rss = bench.run_measured([sys.executable, "-c", code])
        self.assertEqual(out.strip(), "done")
        self.assertGreater(wall, 0)
        self.assertGreaterEqual(rss, 200)

    def test_run_measured_raises_with_stderr_on_failure(self):
        with self.assertRaisesRegex(RuntimeError, "exited 3: boom"):
            bench.run_measured([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])


class Args(unittest.TestCase):
    def test_defaults(self):
        a = bench.parse_args([])
        self.assertEqual(a.models, "tiny.en,base")
        self.assertEqual(a.threads, list(dict.fromkeys(["1", str(os.cpu_count())])))
        self.assertEqual(a.runs, 3)
        self.assertEqual(a.only, list(bench.SECTIONS))
        self.assertEqual(a.peers, list(bench.PEERS))
        self.assertEqual(a.latency_target, 2.0)

    def test_quick_narrows_unless_told(self):
        a = bench.parse_args(["--quick"])
        self.assertEqual((a.models, a.runs, a.threads, a.max_streams), ("tiny.en", 1, ["1"], 2))
        a = bench.parse_args(["--quick", "--models", "base", "--runs", "2"])
        self.assertEqual((a.models, a.runs), ("base", 2))

    def test_unknown_section_or_peer_is_a_usage_error(self):
        with contextlib.redirect_stderr(io.StringIO()) as err, self.assertRaises(SystemExit):
            bench.parse_args(["--only", "offline,speed"])
        self.assertIn("unknown section(s) speed", err.getvalue())
        with contextlib.redirect_stderr(io.StringIO()) as err, self.assertRaises(SystemExit):
            bench.parse_args(["--peers", "whisper-cli"])
        self.assertIn("unknown peer(s) whisper-cli", err.getvalue())
        self.assertEqual(bench.parse_args(["--peers", "none"]).peers, [])


class Report(unittest.TestCase):
    def doc(self):
        engines = {
            "ours": {"rtf": 0.2, "load_s": 0.1, "rss_mb": 200, "wer": 0.05, "processing_s": 2.0,
                     "errors": 1, "reference_words": 20},
            "fw-int8": {"rtf": 0.1, "load_s": 0.5, "rss_mb": 250, "wer": 0.05, "processing_s": 1.0,
                        "errors": 1, "reference_words": 20},
            "whisper-c": {"error": "cc failed"},
        }
        return {
            "date": "2026-11-26 07:00 UTC", "commit": "abc", "command": "scripts/bench --only offline,stream",
            "machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 8, "gpu": None},
            "load_before": [1.0, 1.0, 1.0], "load_after": [2.0, 1.5, 1.0], "versions": {"ours": "transcribe"},
            "models": [{"name": "tiny.en", "ggml": "/m/ggml-tiny.en.bin", "bytes": 77_700_000,
                        "sha256": "ab" * 32, "same_weights_as_peer": True, "ct2": "/c", "peer_model": "tiny.en"}],
            "notes": ["a note"], "quick": False,
            "sections": {
                "offline": {"rows": [{"threads": "1", "model": "tiny.en", "clip": "long", "audio_s": 10.0,
                                      "engines": engines}], "totals": []},
                "stream": {"error": "needs transcribe-server"},
            },
        }

    def test_markdown_has_ratios_failures_and_provenance(self):
        md = bench.markdown(self.doc())
        self.assertIn("| 1 | tiny.en | long | 10.0 | 0.200 | 0.100 | - | 2.00 | - |", md)
        self.assertIn("tiny.en long t1 whisper-c: cc failed", md)
        self.assertIn("### stream: FAILED", md)
        self.assertIn("needs transcribe-server", md)
        self.assertIn("SHA-256 `abababababababab…`", md)
        self.assertIn("before 1.0/1.0/1.0, after 2.0/1.5/1.0", md)
        self.assertIn("Note: a note", md)
        self.assertNotIn("### accuracy", md)


def c_driver_inputs():
    root = Path(bench.ROOT)
    libs = sorted((bench.TARGET / "release" / "build").glob("whisper-rs-sys-*/out/lib/libwhisper.a"))
    model = Path.home() / ".cache" / "transcribe" / "models" / "ggml-tiny.en.bin"
    return root, libs, model


class Sweep(unittest.TestCase):
    @staticmethod
    def row(step, file, seen, widened=0, steps=10, final=1.0, load=0.5):
        return {"step_s": step, "file": file, "emission_seen_s_p95": seen, "emission_committed_s_p95": seen + 1,
                "steps_widened": widened, "steps": steps, "final_latency_s_p95": final, "compute_load": load}

    def test_keeps_up(self):
        self.assertTrue(bench.sweep_keeps_up(self.row(1, "a", 1.0, widened=9), 2.0))  # decode-bound is fine
        self.assertFalse(bench.sweep_keeps_up(self.row(1, "a", 1.0, load=1.2), 2.0))  # backlog
        self.assertFalse(bench.sweep_keeps_up(self.row(1, "a", 1.0, final=2.5), 2.0))  # finals late
        self.assertFalse(bench.sweep_keeps_up(self.row(1, "a", 1.0, final=None), 2.0))

    def test_best_is_lowest_worst_file_p95_among_steps_that_keep_up_everywhere(self):
        rows = [self.row(0.25, "a", 0.5), self.row(0.25, "b", 0.6, final=3.0),  # fails on b
                self.row(0.5, "a", 0.9), self.row(0.5, "b", 1.4),
                self.row(1.0, "a", 1.2), self.row(1.0, "b", 1.3)]
        best = bench.sweep_best(rows, 2.0)
        self.assertEqual(best["step_s"], 1.0)  # worst file 1.3 s beats 0.5's 1.4 s
        self.assertEqual(best["emission_seen_s_p95"], 1.3)
        self.assertIsNone(bench.sweep_best([self.row(0.25, "a", 0.5, load=1.1)], 2.0))
        # Fitted finals win only where full-window ones miss the target or are slower.
        fit = dict(self.row(0.5, "a", 0.9), final_context="fit")
        self.assertEqual(bench.sweep_best([self.row(0.5, "a", 0.9), fit], 2.0)["final_context"], "full")
        self.assertEqual(bench.sweep_best([self.row(0.5, "a", 0.9, final=2.5), fit], 2.0)["final_context"], "fit")

    def test_quantize_and_sweep_flags(self):
        a = bench.parse_args(["--quantize", "q8_0,q5_0", "--sweep-steps", "0.5,1"])
        self.assertEqual(a.quantize, ["q8_0", "q5_0"])
        self.assertEqual(a.sweep_steps, ["0.5", "1"])
        self.assertEqual(bench.parse_args([]).quantize, ["q8_0"])
        self.assertEqual(bench.parse_args([]).sweep_final_context, ["full", "fit"])
        self.assertEqual(bench.parse_args(["--quick"]).quantize, [])
        self.assertIn("sweep", bench.parse_args([]).only)


class CDriver(unittest.TestCase):
    @unittest.skipUnless(c_driver_inputs()[1] and c_driver_inputs()[2].exists(),
                         "needs a cargo release build (whisper-rs-sys static libraries) and cached tiny.en")
    def test_builds_and_transcribes_a_fixture(self):
        root, _, model = c_driver_inputs()
        setup = bench.Setup(SimpleNamespace(binary_dir=None, whisper_lib_dir=None, peers=["whisper-c"]))
        setup.build_c_driver()
        clip = next(c for c in bench.fixture_clips() if c["id"] == "speech_short")
        out = subprocess.run([setup.c_driver, model, clip["path"], "--threads", "1", "--language", "en"],
                             capture_output=True, text=True, check=True)
        j = json.loads(out.stdout)
        self.assertAlmostEqual(j["audio_s"], 2.7, delta=0.3)
        self.assertGreater(j["load_s"], 0)
        self.assertLessEqual(bench.wer_counts(clip["reference"], j["text"])[0], 1, j["text"])
        self.assertIn("total time", out.stderr)  # whisper_print_timings

    def test_rejects_audio_it_cannot_read(self):
        root, libs, model = c_driver_inputs()
        if not libs or not model.exists():
            self.skipTest("needs the static libraries and cached tiny.en")
        setup = bench.Setup(SimpleNamespace(binary_dir=None, whisper_lib_dir=None, peers=["whisper-c"]))
        setup.build_c_driver()
        mp3 = root / "audio-fixtures" / "formats" / "mp3_44k1_stereo.mp3"
        p = subprocess.run([setup.c_driver, model, mp3], capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn("not a RIFF/WAVE file", p.stderr)


if __name__ == "__main__":
    unittest.main()
