"""One faster-whisper transcription, timed, as JSON on stdout (the faster-whisper peers of
scripts/bench, bench/bench.py).

Settings mirror `transcribe FILE` (client/src/offline.rs, engine/src/session.rs):
greedy decoding (beam_size 1), temperature fallback 0.0, 0.2, ... 1.0, no conditioning on
previous text (whisper.cpp `no_context`), non-speech tokens suppressed, word timestamps on,
no VAD filter, language detected unless the model is English-only. compute_type int8.

Usage: python fw_transcribe.py MODEL_DIR AUDIO --threads N
"""

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("audio")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--no-word-timestamps", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    from faster_whisper import WhisperModel  # import time is part of "startup", not load

    t1 = time.perf_counter()
    model = WhisperModel(
        args.model_dir,
        device="cpu",
        compute_type=args.compute_type,
        cpu_threads=args.threads,
        num_workers=1,
    )
    t2 = time.perf_counter()
    segments, info = model.transcribe(
        args.audio,  # decoding the file is timed, as ours times it
        beam_size=1,
        best_of=1,
        temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
        condition_on_previous_text=False,
        word_timestamps=not args.no_word_timestamps,
        vad_filter=False,
        suppress_tokens=[-1],
    )
    texts = [s.text.strip() for s in segments]  # the generator does the work
    t3 = time.perf_counter()
    print(
        json.dumps(
            {
                "import_s": t1 - t0,
                "load_s": t2 - t1,
                "processing_s": t3 - t2,
                "audio_s": info.duration,
                "language": info.language,
                "text": " ".join(t for t in texts if t),
            }
        )
    )


if __name__ == "__main__":
    main()
