#!/usr/bin/env python3
"""Side-by-side streaming simulations: one `stream_sim` per clip and variant, in one run.

Each variant is `NAME=BINARY[:FLAGS]`: a `stream_sim` binary (an older build for an A/B of
two commits) and extra flags (for two settings of one build). For every clip the variants
run one after the other, their order alternating from clip to clip (the machine's load
drifts); each run's JSON report is kept in `--out`.

Reported per variant: pooled streaming WER (each clip's WER weighted by its reference's
words), word-shown latency p50/p95 (median over clips), partial jobs, partial decode time
(mean over clips), compute load (decode time / audio, summed), and the decoder's calls in
partials (single-token steps, tokens of batched calls: `stream_sim` builds that count
them), with the ratio of each variant to the first.

    bench/stream_sim_ab.py --model MODEL.bin --out DIR \
        --variant base=/path/old/stream_sim --variant prefix=target/release/examples/stream_sim:--partial-prefix,on \
        [--flags "--threads 2"] CLIP.wav[=REFERENCE.txt] ...

A clip's reference is `<clip>.txt` beside it unless given after `=`. `--flags` go to every
variant (comma-separated inside a variant's FLAGS, space-separated in `--flags`).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys


def parse_variant(spec):
    name, _, rest = spec.partition("=")
    binary, _, flags = rest.partition(":")
    if not name or not binary:
        raise SystemExit(f"--variant {spec!r}: NAME=BINARY[:FLAGS]")
    return name, binary, [f for f in flags.split(",") if f]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--flags", default="", help="flags for every variant")
    ap.add_argument("clips", nargs="+")
    args = ap.parse_args()
    variants = [parse_variant(v) for v in args.variant]
    common = args.flags.split()
    os.makedirs(args.out, exist_ok=True)

    rows = {name: [] for name, _, _ in variants}
    for i, clip in enumerate(args.clips):
        wav, _, ref = clip.partition("=")
        ref = ref or os.path.splitext(wav)[0] + ".txt"
        stem = os.path.splitext(os.path.basename(wav))[0]
        order = variants if i % 2 == 0 else list(reversed(variants))
        for name, binary, flags in order:
            out = os.path.join(args.out, f"{stem}.{name}.json")
            cmd = [binary, args.model, wav, "--no-offline", "--reference", ref,
                   "--json", out] + common + flags
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout + proc.stderr)
                raise SystemExit(f"{name} on {wav} failed ({proc.returncode})")
            with open(out) as f:
                report = json.load(f)
            with open(ref) as f:
                report["reference_words"] = len(f.read().split())
            report["clip"] = stem
            rows[name].append(report)
            print(f"{stem:32} {name:10} wer {report['stream_wer']:.3f} "
                  f"shown p95 {report['word_shown_s_p95']:.2f} s "
                  f"partials {report['partial_jobs']:.0f} "
                  f"steps {report.get('partial_decoder_steps', float('nan')):.0f}",
                  flush=True)

    def summary(reports):
        words = sum(r["reference_words"] for r in reports)
        finite = lambda key: [r[key] for r in reports if r.get(key) == r.get(key)
                              and r.get(key) is not None]
        return {
            "clips": len(reports),
            "reference_words": words,
            "stream_wer": sum(r["stream_wer"] * r["reference_words"] for r in reports) / words,
            "word_shown_s_p50": statistics.median(finite("word_shown_s_p50")),
            "word_shown_s_p95": statistics.median(finite("word_shown_s_p95")),
            "partial_jobs": sum(r["partial_jobs"] for r in reports),
            "partial_decode_ms_mean": statistics.mean(finite("partial_decode_ms_mean")),
            "compute_load": sum(r["decode_total_s"] for r in reports)
            / sum(r["audio_s"] for r in reports),
            "partial_decoder_steps": sum(r.get("partial_decoder_steps", float("nan"))
                                         for r in reports),
            "partial_decoder_batched_tokens": sum(
                r.get("partial_decoder_batched_tokens", float("nan")) for r in reports),
        }

    summaries = {name: summary(reports) for name, reports in rows.items()}
    first = variants[0][0]
    print()
    keys = list(summaries[first].keys())
    print(f"{'':32}" + "".join(f"{name:>14}" for name in summaries))
    for key in keys:
        line = f"{key:32}"
        for name in summaries:
            line += f"{summaries[name][key]:14.3f}"
        print(line)
    for name in list(summaries)[1:]:
        for key in ("partial_decoder_steps", "partial_decode_ms_mean", "compute_load"):
            a, b = summaries[first][key], summaries[name][key]
            if a == a and b == b and b:
                print(f"{first}/{name} {key}: {a / b:.2f}x")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"variants": summaries, "runs": rows}, f, indent=1)


if __name__ == "__main__":
    main()
