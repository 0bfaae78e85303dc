"""The REST door with the official `openai` Python package, against the real
`transcribe-server` (tiny.en and base) on loopback, with bearer tokens.

scripts/test runs it in a venv it makes (target/rest-venv) after the cargo tests:
    target/rest-venv/bin/python -m unittest tests/rest/test_openai.py
Environment: TRANSCRIBE_SERVER_BIN (default target/release/transcribe-server).
"""
import importlib.util
import os
import re
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import openai
from prometheus_client.openmetrics.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "audio-fixtures"
SERVER = Path(os.environ.get("TRANSCRIBE_SERVER_BIN", ROOT / "target" / "release" / "transcribe-server"))
CLI = SERVER.parent / "transcribe"
TOKEN = "rest-test-token-123"
# The CLI's threshold for the speech fixtures (client/tests/cli.rs FIXTURE_WER).
FIXTURE_WER = 0.20
# The CLI's ceilings on ../shared/eval (client/tests/eval.rs CLIP_WER, OVERALL_WER).
EVAL_CLIP_WER = 0.60
EVAL_OVERALL_WER = 0.15


# core's text normalisation and WER, as bench/bench.py ports them (its tests check the port
# against core's cases). Loaded by path: bench/ is not a package.
_spec = importlib.util.spec_from_file_location("bench_orchestrator", ROOT / "bench" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
free_port = bench.free_port


def wer(reference, hypothesis):
    errors, words = bench.wer_counts(reference, hypothesis)
    return errors / max(1, words)


def http_status(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Server:
    """transcribe-server with tiny.en (the default) and base, tokens required."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        tokens = Path(self.dir.name) / "tokens"
        tokens.write_text(f"# test\n{TOKEN}\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(self.dir.name) / "server.log", "w+")
        self.proc = subprocess.Popen(
            [str(SERVER), "--listen", f"127.0.0.1:{self.port}", "--model", "tiny.en,base",
             "--auth-token-file", str(tokens), "--max-streams", "4"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if http_status(self.url + "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the server did not become ready: " + self.tail())

    def tail(self):
        self.log.seek(0)
        return self.log.read()[-2000:]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()
        self.dir.cleanup()


class OpenAIClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not SERVER.exists():
            raise unittest.SkipTest(f"{SERVER} is not built")
        cls.server = Server()
        cls.client = openai.OpenAI(base_url=cls.server.url + "/v1", api_key=TOKEN, max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def transcribe(self, name, **kw):
        with open(FIXTURES / "speech" / name, "rb") as f:
            return self.client.audio.transcriptions.create(model="whisper-1", file=f, **kw)

    def test_verbose_json_words_and_segments_are_monotonic_and_inside_the_audio(self):
        r = self.transcribe("park.wav", response_format="verbose_json",
                            timestamp_granularities=["word", "segment"])
        self.assertGreater(r.duration, 5)
        self.assertEqual(r.language, "english")
        self.assertLessEqual(wer((FIXTURES / "speech" / "park.txt").read_text(), r.text), FIXTURE_WER, r.text)
        self.assertTrue(r.segments and r.words, r)
        for seq in (r.segments, r.words):
            last = 0.0
            for item in seq:
                self.assertLessEqual(last - 0.05, item.start, item)
                self.assertLessEqual(item.start, item.end, item)
                self.assertLessEqual(item.end, r.duration + 1e-3, item)
                last = item.start
        joined = " ".join(w.word for w in r.words)
        self.assertLessEqual(wer(r.text, joined), 0.1, (r.text, joined))

    def test_srt_and_vtt_parse(self):
        cue = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)"
        srt = self.transcribe("park.wav", response_format="srt")
        blocks = [b for b in srt.strip().split("\n\n") if b]
        self.assertTrue(blocks, srt)
        for i, block in enumerate(blocks, 1):
            lines = block.split("\n")
            self.assertEqual(lines[0], str(i), block)
            self.assertRegex(lines[1], "^" + cue.replace("[,.]", ",") + "$")
            self.assertTrue(lines[2].strip(), block)
        vtt = self.transcribe("park.wav", response_format="vtt")
        self.assertTrue(vtt.startswith("WEBVTT\n\n"), vtt)
        self.assertRegex(vtt, cue.replace("[,.]", r"\."))

    def test_text_and_json_match(self):
        text = self.transcribe("short.wav", response_format="text")
        self.assertIsInstance(text, str)
        json_text = self.transcribe("short.wav").text
        self.assertEqual(text.strip(), json_text.strip())
        self.assertLessEqual(wer("Please close the door. It is cold.", json_text), FIXTURE_WER, json_text)

    def test_translation_on_a_multilingual_model(self):
        with open(FIXTURES / "speech" / "park.wav", "rb") as f:
            r = self.client.audio.translations.create(model="base", file=f)
        self.assertLessEqual(wer((FIXTURES / "speech" / "park.txt").read_text(), r.text), 0.3, r.text)

    def test_streaming_deltas_add_up_to_the_final_text(self):
        with open(FIXTURES / "speech" / "pauses.wav", "rb") as f:
            stream = self.client.audio.transcriptions.create(model="whisper-1", file=f, stream=True)
            deltas, done = [], None
            for event in stream:
                if event.type == "transcript.text.delta":
                    deltas.append(event.delta)
                elif event.type == "transcript.text.done":
                    done = event.text
        self.assertIsNotNone(done)
        self.assertGreater(len(deltas), 1)
        self.assertEqual("".join(deltas), done)
        self.assertEqual(done, self.transcribe("pauses.wav").text)

    def test_speech_fixtures_within_the_cli_threshold(self):
        manifest = (FIXTURES / "manifest.tsv").read_text().splitlines()[1:]
        for line in manifest:
            cols = line.split("\t")
            if len(cols) >= 4 and cols[2] == "speech":
                with open(FIXTURES / cols[1], "rb") as f:
                    text = self.client.audio.transcriptions.create(model="tiny.en", file=f).text
                self.assertLessEqual(wer(cols[3], text), FIXTURE_WER, (cols[1], text))

    def test_opus_uploads_as_browsers_and_voice_notes_make_them(self):
        # Ogg Opus (a voice note) and WebM Opus (MediaRecorder), the same sentence.
        for name in ["opus_48k_mono.opus", "webm_48k_stereo_opus.webm"]:
            with open(FIXTURES / "formats" / name, "rb") as f:
                text = self.client.audio.transcriptions.create(model="tiny.en", file=f).text
            self.assertLessEqual(wer("Please close the door. It is cold.", text), FIXTURE_WER, (name, text))

    def test_eval_clips_within_the_cli_thresholds(self):
        # The CLI's real-speech test (client/tests/eval.rs) through REST: the same clips
        # (English, strong reference, numbers-as-digits not gated), the same ceilings.
        eval_dir = ROOT.parent / "shared" / "eval"
        if not (eval_dir / "manifest.tsv").exists():
            self.skipTest(f"{eval_dir} is absent")
        lines = (eval_dir / "manifest.tsv").read_text().splitlines()
        header = lines[0].split("\t")
        rows = [dict(zip(header, line.split("\t"))) for line in lines[1:]]
        numbers = set("zero oh one two three four five six seven eight nine ten eleven twelve thirteen "
                      "fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty "
                      "hundred thousand".split())
        errors = words = 0
        failures, seen = [], set()
        for row in rows:
            if (row.get("language") != "en" or row.get("ref_quality") not in ("exact", "test-reference", "cross-checked")
                    or not row.get("wav16k") or not row.get("reference") or row["wav16k"] in seen):
                continue
            seen.add(row["wav16k"])
            with open(eval_dir / row["wav16k"], "rb") as f:
                text = self.client.audio.transcriptions.create(model="tiny.en", file=f, language="en").text
            if numbers & set(bench.normalize(row["reference"]).split()) and re.search(r"[0-9]", text):
                continue
            clip_errors, clip_words = bench.wer_counts(row["reference"], text)
            clip = clip_errors / max(1, clip_words)
            errors += clip_errors
            words += clip_words
            if clip > EVAL_CLIP_WER:
                failures.append((row["id"], clip, text))
        overall = errors / max(1, words)
        print(f"REST eval: {len(seen)} clips, overall WER {overall:.3f} over {words} words")
        self.assertFalse(failures, failures)
        self.assertLessEqual(overall, EVAL_OVERALL_WER)

    def test_wrong_key_is_an_authentication_error(self):
        bad = openai.OpenAI(base_url=self.server.url + "/v1", api_key="wrong", max_retries=0)
        with self.assertRaises(openai.AuthenticationError):
            bad.models.list()
        with open(FIXTURES / "speech" / "short.wav", "rb") as f, self.assertRaises(openai.AuthenticationError):
            bad.audio.transcriptions.create(model="whisper-1", file=f)

    def test_garbage_upload_is_a_bad_request_that_says_why(self):
        with self.assertRaises(openai.BadRequestError) as caught:
            self.client.audio.transcriptions.create(model="whisper-1", file=("noise.wav", b"RIFF not really a wav"))
        body = caught.exception.body
        self.assertEqual(body["param"], "file", body)
        self.assertIn("cannot decode", body["message"])

    def test_unknown_model_is_not_found(self):
        with open(FIXTURES / "speech" / "short.wav", "rb") as f, \
                self.assertRaises(openai.NotFoundError) as caught:
            self.client.audio.transcriptions.create(model="no-such-model", file=f)
        self.assertEqual(caught.exception.body["code"], "model_not_found")

    def test_models_lists_what_is_served(self):
        ids = [m.id for m in self.client.models.list()]
        self.assertEqual(ids, ["tiny.en", "base"])

    def test_health_needs_no_token(self):
        self.assertEqual(http_status(self.server.url + "/healthz")[0], 200)
        self.assertEqual(http_status(self.server.url + "/readyz")[0], 200)

    def metrics(self):
        status, text = http_status(self.server.url + "/metrics", {"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(status, 200, text)
        values = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                values[key] = sample.value
        return values

    def test_metrics_count_calls_audio_and_refusals(self):
        self.assertEqual(http_status(self.server.url + "/metrics")[0], 401, "metrics need the token")
        before = self.metrics()
        with open(FIXTURES / "speech" / "short.wav", "rb") as f:
            duration = self.client.audio.transcriptions.create(
                model="whisper-1", file=f, response_format="verbose_json").duration
        # A gRPC stream of the same file, through the CLI.
        p = subprocess.run([str(CLI), "--server", self.server.url, str(FIXTURES / "speech" / "short.wav")],
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, TRANSCRIBE_AUTH_TOKEN=TOKEN))
        self.assertEqual(p.returncode, 0, p.stderr)
        with self.assertRaises(openai.AuthenticationError):
            openai.OpenAI(base_url=self.server.url + "/v1", api_key="wrong", max_retries=0).models.list()
        after = self.metrics()

        def delta(name, **labels):
            key = (name, tuple(sorted(labels.items())))
            return after.get(key, 0.0) - before.get(key, 0.0)

        self.assertAlmostEqual(delta("transcribe_audio_seconds_total", door="rest", kind="unary"), duration, delta=0.01)
        self.assertAlmostEqual(delta("transcribe_audio_seconds_total", door="grpc", kind="stream"), duration, delta=0.1)
        self.assertEqual(delta("transcribe_calls_total", door="rest", kind="unary", result="ok"), 1)
        self.assertEqual(delta("transcribe_calls_total", door="grpc", kind="stream", result="ok"), 1)
        self.assertGreaterEqual(delta("transcribe_refusals_total", reason="UNAUTHENTICATED"), 1)
        self.assertGreaterEqual(delta("transcribe_decode_seconds_count", kind="file"), 1)
        self.assertGreaterEqual(delta("transcribe_decode_seconds_count", kind="final"), 1)
        self.assertEqual(after[("transcribe_build", (("backend", "cpu"),))], 1)

    def test_readme_curl_examples_run_as_written(self):
        readme = (ROOT / "README.md").read_text()
        section = readme.split("<!-- rest-examples -->")[1]
        commands = [l.strip() for l in section.split("```")[1].splitlines() if l.strip().startswith("curl ")]
        self.assertGreaterEqual(len(commands), 3, commands)
        env = dict(os.environ, TRANSCRIBE_TOKEN=TOKEN)
        for command in commands:
            command = command.replace("127.0.0.1:50051", f"127.0.0.1:{self.server.port}")
            p = subprocess.run(["bash", "-c", command + " --fail-with-body -sS"], cwd=ROOT,
                               capture_output=True, text=True, env=env, timeout=120)
            self.assertEqual(p.returncode, 0, (command, p.stdout, p.stderr))
            self.assertTrue(p.stdout.strip(), command)


if __name__ == "__main__":
    unittest.main()
