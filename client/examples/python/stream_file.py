#!/usr/bin/env python3
"""Stream a WAV file to a transcribe server and print interim and final results.

A minimal non-Rust client of `transcribe.v1.TranscriptionService/StreamingRecognize`:
it generates the Python stubs from `proto/transcribe/v1/transcribe.proto` at run time
(grpc_tools.protoc into a temporary directory), sends a config message first, then the
file's 16-bit PCM as LINEAR16 chunks, and prints what the server says:

    interim<TAB>INDEX<TAB>COMMITTED<TAB>TAIL
    final<TAB>INDEX<TAB>START<TAB>END<TAB>TEXT

(times in seconds from the start of the file). Errors go to stderr with the gRPC status
code; the exit status is 0 on success, 1 on a gRPC error, 2 on bad input.

Usage:
    python stream_file.py [--server HOST:PORT] [--chunk-ms 100] [--realtime] FILE.wav
"""

import argparse
import importlib
import os
import subprocess
import sys
import tempfile
import time
import wave

# The proto, relative to this file: client/examples/python -> repository root.
DEFAULT_PROTO = os.path.join(
    os.path.dirname(os.path.abspath(__file__)),
    "..", "..", "..", "proto", "transcribe", "v1", "transcribe.proto",
)


def generate_stubs(proto_path, out_dir):
    """Runs grpc_tools.protoc on `proto_path` into `out_dir`; returns (pb2, pb2_grpc)."""
    proto_path = os.path.abspath(proto_path)
    # The include root is the directory above `transcribe/v1/`, so the generated modules
    # import each other as `transcribe.v1.transcribe_pb2`.
    include = os.path.dirname(os.path.dirname(os.path.dirname(proto_path)))
    relative = os.path.relpath(proto_path, include)
    # `python -m grpc_tools.protoc` adds the well-known types (duration, timestamp) itself.
    command = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        relative,
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=include)
    if result.returncode != 0:
        raise RuntimeError(f"protoc failed on {proto_path}:\n{result.stderr}")
    sys.path.insert(0, out_dir)
    module = relative[: -len(".proto")].replace(os.sep, ".")
    pb2 = importlib.import_module(module + "_pb2")
    pb2_grpc = importlib.import_module(module + "_pb2_grpc")
    return pb2, pb2_grpc


def read_wav(path):
    """Returns (pcm bytes, sample rate, channels) of a 16-bit PCM WAV file."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getcomptype() != "NONE":
            raise ValueError(
                f"{path}: need 16-bit PCM WAV, got {8 * w.getsampwidth()}-bit "
                f"{w.getcomptype()}"
            )
        return w.readframes(w.getnframes()), w.getframerate(), w.getnchannels()


def requests(pb2, pcm, rate, channels, chunk_ms, realtime):
    """The request stream: the config first, then LINEAR16 chunks of `chunk_ms`."""
    config = pb2.StreamingRecognitionConfig(
        config=pb2.RecognitionConfig(
            audio_format=pb2.AudioFormat(
                encoding=pb2.AUDIO_ENCODING_LINEAR16,
                sample_rate_hertz=rate,
                audio_channel_count=channels,
            ),
            enable_word_time_offsets=True,
        ),
        interim_results=True,
    )
    yield pb2.StreamingRecognizeRequest(streaming_config=config)
    frame_bytes = 2 * channels
    chunk_bytes = max(1, rate * chunk_ms // 1000) * frame_bytes
    for start in range(0, len(pcm), chunk_bytes):
        if realtime:
            time.sleep(chunk_ms / 1000)
        yield pb2.StreamingRecognizeRequest(audio_content=pcm[start:start + chunk_bytes])


def seconds(duration):
    """A google.protobuf.Duration in seconds."""
    return duration.seconds + duration.nanos / 1e9


def print_results(results):
    """Prints one response's results: finals, and the interim of each utterance."""
    interims = {}  # utterance index -> [committed, tail]
    for result in results:
        text = result.alternatives[0].transcript.strip() if result.alternatives else ""
        if result.is_final:
            start = seconds(result.result_start_offset)
            end = seconds(result.result_end_offset)
            print(f"final\t{result.utterance_index}\t{start:.2f}\t{end:.2f}\t{text}", flush=True)
        else:
            # An interim comes as up to two results: the committed part (high stability)
            # and the unconfirmed tail (low stability).
            parts = interims.setdefault(result.utterance_index, ["", ""])
            parts[0 if result.stability >= 0.5 else 1] = text
    for index, (committed, tail) in interims.items():
        print(f"interim\t{index}\t{committed}\t{tail}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", help="16-bit PCM WAV file (16 kHz mono is best)")
    parser.add_argument("--server", default="127.0.0.1:50051",
                        help="server address, HOST:PORT (default %(default)s)")
    parser.add_argument("--chunk-ms", type=int, default=100,
                        help="audio per message in milliseconds (default %(default)s)")
    parser.add_argument("--realtime", action="store_true",
                        help="pace chunks like a live source")
    parser.add_argument("--proto", default=DEFAULT_PROTO,
                        help="path of transcribe/v1/transcribe.proto")
    args = parser.parse_args()

    try:
        pcm, rate, channels = read_wav(args.file)
    except (OSError, EOFError, ValueError, wave.Error) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    import grpc  # imported late so that --help works without grpcio

    target = args.server.removeprefix("http://")
    with tempfile.TemporaryDirectory(prefix="transcribe-stubs-") as stubs:
        pb2, pb2_grpc = generate_stubs(args.proto, stubs)
        with grpc.insecure_channel(target) as channel:
            stub = pb2_grpc.TranscriptionServiceStub(channel)
            responses = stub.StreamingRecognize(
                requests(pb2, pcm, rate, channels, args.chunk_ms, args.realtime)
            )
            try:
                for response in responses:
                    print_results(response.results)
            except grpc.RpcError as error:
                print(f"error: {error.code().name}: {error.details()}", file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
