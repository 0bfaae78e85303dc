#!/usr/bin/env python3
"""Writes the hand-made seed corpora in fuzz/corpus/<target>/seed-* (run from anywhere;
needs sox for the compressed formats and, for ct2_import, the real tiny.en CTranslate2
export that models/tests/real_ct2.rs caches in target/test-ct2/tiny.en, whose variable
names and shapes are copied at toy size). Fuzzer-found inputs sit beside the seeds."""
import math, os, struct, subprocess, tempfile
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"

# harness/audio.rs NAMES: the first byte of an audio_decode input picks the file name.
NAMES = ["in.wav", "in.mp3", "in.aac", "in.flac", "in.ogg", "in.sph", "in.raw", "in.opus", "in", "in.m4a"]


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


def audio(name, data, ext="in.wav"):
    put("audio_decode", name, bytes([NAMES.index(ext)]) + data)


def tone(n, rate=16000, freq=440.0):
    return [0.5 * math.sin(2 * math.pi * freq * i / rate) for i in range(n)]


def wav(fmt_tag, channels, rate, bits, data, extensible=None, data_size=None, riff_size=None, extra=b""):
    block = channels * max(bits // 8, 1)
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block & 0xFFFF, bits)
    if extensible is not None:
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", extensible) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra
    body += b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def s16(samples):
    return b"".join(struct.pack("<h", int(max(-1, min(1, s)) * 32767)) for s in samples)


def sphere(fields, data, header_len=1024):
    head = "NIST_1A\n%7d\n" % header_len + "".join(f + "\n" for f in fields) + "end_head\n"
    return head.encode().ljust(header_len, b" ") + data


def audio_seeds():
    t = tone(800)
    audio("wav-s16", wav(1, 1, 16000, 16, s16(t)))
    audio("wav-u8", wav(1, 1, 8000, 8, bytes(int(128 + 100 * s) for s in t)))
    audio("wav-s24-stereo", wav(1, 2, 44100, 24, b"".join(struct.pack("<i", int(s * 8e6))[:3] * 2 for s in t[:200])))
    audio("wav-f32", wav(3, 1, 16000, 32, b"".join(struct.pack("<f", s) for s in t[:400])))
    audio("wav-f32-nan", wav(3, 1, 16000, 32, struct.pack("<f", float("nan")) * 4 + b"".join(struct.pack("<f", s) for s in t[:100])))
    audio("wav-f32-inf", wav(3, 1, 16000, 32, struct.pack("<f", float("inf")) + b"".join(struct.pack("<f", s) for s in t[:100])))
    audio("wav-f32-huge", wav(3, 1, 16000, 32, struct.pack("<f", 3e38) * 50))
    audio("wav-f64", wav(3, 1, 16000, 64, b"".join(struct.pack("<d", s) for s in t[:200])))
    audio("wav-mulaw", wav(7, 1, 8000, 8, bytes(range(256))))
    audio("wav-alaw-stereo", wav(6, 2, 8000, 8, bytes(range(256))))
    audio("wav-ext-mulaw", wav(0xFFFE, 1, 8000, 8, bytes(range(200)), extensible=7))
    audio("wav-ext-s16-6ch", wav(0xFFFE, 6, 48000, 16, s16(t[:600]), extensible=1))
    audio("wav-ima-adpcm", wav(0x11, 1, 8000, 4, bytes(256)))
    audio("wav-zero-channels", wav(1, 0, 16000, 16, s16(t[:100])))
    audio("wav-zero-rate", wav(1, 1, 0, 16, s16(t[:100])))
    audio("wav-huge-rate", wav(1, 1, 4_000_000_000, 16, s16(t[:100])))
    audio("wav-1hz", wav(1, 1, 1, 16, s16(t[:100])))
    audio("wav-65535ch", wav(1, 65535, 16000, 16, s16(t[:100])))
    audio("wav-huge-data-size", wav(1, 1, 16000, 16, s16(t[:100]), data_size=0x7FFFFFF0))
    audio("wav-streaming-size", wav(1, 1, 16000, 16, s16(t[:100]), data_size=0xFFFFFFFF, riff_size=0xFFFFFFFF))
    audio("wav-odd-bytes", wav(1, 1, 16000, 16, s16(t[:100]) + b"\x01"))
    audio("wav-empty-data", wav(1, 1, 16000, 16, b""))
    audio("wav-truncated", wav(1, 1, 16000, 16, s16(t))[:700])
    audio("wav-12bit", wav(1, 1, 16000, 12, s16(t[:100])))
    audio("wav-bits0", wav(1, 1, 16000, 0, s16(t[:100])))
    audio("wav-list-chunk", wav(1, 1, 16000, 16, s16(t[:100]), extra=b"LIST\x04\x00\x00\x00INFO"))
    audio("rf64", b"RF64\xff\xff\xff\xffWAVEds64" + bytes(28))
    audio("empty", b"")
    audio("random-mp3", bytes((i * 73 + 11) % 251 for i in range(600)), "in.mp3")
    audio("random-aac", bytes((i * 31 + 7) % 253 for i in range(300)), "in.aac")
    audio("headerless-pcm", s16(t[:100]), "in.raw")
    audio("opus-head", b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00", "in.opus")
    audio("caf", b"caff\x00\x01\x00\x00" + bytes(40))
    audio("matroska", b"\x1a\x45\xdf\xa3" + bytes(40))
    audio("mp4-ftyp-only", struct.pack(">I", 20) + b"ftypM4A \x00\x00\x00\x00M4A ", "in.m4a")
    audio("id3-only", b"ID3\x04\x00\x00\x00\x00\x00\x10" + bytes(16), "in.mp3")
    pcm = s16([0.25 * math.sin(i / 5) for i in range(600)])
    audio("sph-s16le", sphere(["sample_rate -i 16000", "channel_count -i 1", "sample_n_bytes -i 2", "sample_byte_format -s2 01", "sample_count -i 600"], pcm), "in.sph")
    audio("sph-s16be-stereo", sphere(["sample_rate -i 8000", "channel_count -i 2", "sample_n_bytes -i 2", "sample_byte_format -s2 10", "sample_count -i 300"], pcm), "in.sph")
    audio("sph-mulaw", sphere(["sample_rate -i 8000", "channel_count -i 1", "sample_n_bytes -i 1", "sample_coding -s4 ulaw", "sample_count -i 256"], bytes(range(256)), 512), "in.sph")
    audio("sph-shorten", sphere(["sample_rate -i 16000", "sample_coding -s26 pcm,embedded-shorten-v2.00"], bytes(64)), "in.sph")
    audio("sph-huge-count", sphere(["sample_rate -i 16000", "channel_count -i 1", "sample_n_bytes -i 2", "sample_count -i 99999999999"], pcm), "in.sph")
    audio("sph-bad-header-len", b"NIST_1A\n   99999999\nend_head\n", "in.sph")
    # Compressed formats, 50 ms of a tone, by sox.
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.wav"
        src.write_bytes(wav(1, 1, 16000, 16, s16(tone(800))))
        for ext, args in [("flac", []), ("mp3", ["-C", "32"]), ("ogg", ["-C", "0"]), ("aiff", []), ("aifc", ["-e", "u-law"]), ("sph", []),
                          ("f64.wav", ["-e", "floating-point", "-b", "64"]), ("ima.wav", ["-e", "ima-adpcm"]), ("ms-adpcm.wav", ["-e", "ms-adpcm"])]:
            out = Path(tmp) / f"t.{ext}"
            r = subprocess.run(["sox", str(src), *args, str(out)], capture_output=True)
            if r.returncode == 0:
                data = out.read_bytes()
                name = {"flac": "in.flac", "mp3": "in.mp3", "ogg": "in.ogg", "sph": "in.sph"}.get(ext, "in")
                audio(f"sox-{ext.replace('.', '-')}", data, name)
                if ext in ("flac", "mp3", "ogg"):
                    audio(f"sox-{ext}-truncated", data[: len(data) * 6 // 10], name)
                    corrupt = bytearray(data)
                    for i in range(len(corrupt) // 3, len(corrupt), 97):
                        corrupt[i] ^= 0x5A
                    audio(f"sox-{ext}-corrupt", bytes(corrupt), name)
            else:
                print("sox", ext, r.stderr.decode().strip())
    # Opus in Ogg and in WebM (browsers' MediaRecorder), 50 ms of a tone, by ffmpeg's libopus;
    # each also cut short and with flipped bytes.
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "t.wav"
        src.write_bytes(wav(1, 1, 16000, 16, s16(tone(800))))
        for ext, name, args in [("opus", "in.opus", ["-ac", "1"]), ("webm", "in", ["-ac", "2"])]:
            out = Path(tmp) / f"t.{ext}"
            r = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(src), "-fflags", "+bitexact",
                                "-flags:a", "+bitexact", *args, "-c:a", "libopus", "-b:a", "16k", str(out)], capture_output=True)
            if r.returncode != 0:
                print("ffmpeg", ext, r.stderr.decode().strip())
                continue
            data = out.read_bytes()
            audio(f"ffmpeg-{ext}", data, name)
            audio(f"ffmpeg-{ext}-truncated", data[: len(data) * 6 // 10], name)
            corrupt = bytearray(data)
            for i in range(len(corrupt) // 3, len(corrupt), 61):
                corrupt[i] ^= 0x5A
            audio(f"ffmpeg-{ext}-corrupt", bytes(corrupt), name)
    for f in ["empty.wav", "header_only.wav", "truncated_header.wav", "not_audio.mp3"]:
        data = (ROOT / "audio-fixtures/corrupt" / f).read_bytes()
        audio("fixture-" + f.replace(".", "-"), data, "in.mp3" if f.endswith("mp3") else "in.wav")


# --- ct2_import: model.bin, config.json, vocabulary packed with harness/ct2.rs SEPARATOR ---
SEP = b"\n--ct2-fuzz--\n"


def tiny_en_variables():
    f = (ROOT / "target/test-ct2/tiny.en/model.bin").read_bytes()
    p = 0

    def take(fmt):
        nonlocal p
        v = struct.unpack_from(fmt, f, p)
        p += struct.calcsize(fmt)
        return v

    def string():
        nonlocal p
        (n,) = take("<H")
        s = f[p : p + n - 1].decode()
        p += n
        return s

    take("<I"), string(), take("<I")
    out = []
    for _ in range(take("<I")[0]):
        name = string()
        (rank,) = take("<B")
        dims = take("<%dI" % rank)
        (dtype,) = take("<B")
        (n,) = take("<I")
        scalar = f[p : p + n] if rank == 0 else None
        p += n
        out.append((name, dims, dtype, scalar))
    return out


def model_bin(variables, aliases, version=6, spec="WhisperSpec"):
    def string(s):
        b = s.encode() + b"\0"
        return struct.pack("<H", len(b)) + b

    out = struct.pack("<I", version) + string(spec) + struct.pack("<II", 3, len(variables))
    size = {0: 4, 1: 1, 2: 2, 3: 4, 4: 2, 5: 2}
    for name, dims, dtype, data in variables:
        n = math.prod(dims) * size[dtype]
        if data is None:
            data = bytes((i * 7) % 60 for i in range(n))  # small positive f16 values
        out += string(name) + struct.pack("<B", len(dims)) + struct.pack("<%dI" % len(dims), *dims)
        out += struct.pack("<BI", dtype, len(data)) + data
    out += struct.pack("<I", len(aliases)) + b"".join(string(a) + string(t) for a, t in aliases)
    return out


def ct2_seeds():
    try:
        real = tiny_en_variables()
    except OSError as e:
        print("skipping ct2 seeds:", e)
        return

    def toy(n_vocab):
        small = {384: 4, 1536: 16, 1152: 12, 768: 8, 1500: 6, 448: 5, 51864: n_vocab}
        return [(n, tuple(small.get(d, d) for d in dims), t, s) for n, dims, t, s in real]

    alias = [("decoder/projection/weight", "decoder/embeddings/weight")]
    config = b'{"lang_ids": [], "suppress_ids": [1, 2], "suppress_ids_begin": [220], "alignment_heads": [[1, 0]]}'
    vocab = b"".join(b"<|endoftext|>\n" if i == 50256 else b"!\n" for i in range(51864))
    put("ct2_import", "valid-english", SEP.join([model_bin(toy(51864), alias), config, vocab]))
    small = model_bin(toy(8), alias)
    small_vocab = b"a\nb\n\n<|endoftext|>\nc\nd\ne\nf\n"
    put("ct2_import", "vocab8", SEP.join([small, config, small_vocab]))
    put("ct2_import", "vocab8-json", SEP.join([small, b"", b'["a", "b", "\\u0120", "<|endoftext|>", "c", "d", "e", "f"]']))
    put("ct2_import", "no-aliases", SEP.join([small[: small.rfind(struct.pack("<I", 1) + b"\x1a\x00decoder/projection")], config, small_vocab]))
    put("ct2_import", "truncated", SEP.join([small[: len(small) // 2], config, small_vocab]))
    put("ct2_import", "version5", SEP.join([model_bin(toy(8), alias, version=5), b"", small_vocab]))
    put("ct2_import", "other-spec", SEP.join([model_bin(toy(8), alias, spec="TransformerSpec"), b"", small_vocab]))
    quant = [(n, d, 1 if len(d) == 2 else t, s) for n, d, t, s in toy(8)]
    put("ct2_import", "int8", SEP.join([model_bin(quant, alias), b"", small_vocab]))
    bf16 = [(n, d, 5 if t == 4 else t, s) for n, d, t, s in toy(8)]
    put("ct2_import", "bf16", SEP.join([model_bin(bf16, alias), config, small_vocab]))
    wrong = [(n, (d[0], d[1]) if n == "encoder/conv1/weight" else d, t, s) for n, d, t, s in toy(8)]
    put("ct2_import", "conv-rank2", SEP.join([model_bin(wrong, alias), b"", small_vocab]))
    deep = toy(8) + [("decoder/layer_4000000000/x", (), 1, b"\x01")]
    put("ct2_import", "huge-layer-index", SEP.join([model_bin(deep, alias), b"", small_vocab]))
    zero = [(n, (d[0], 0) if n == "decoder/embeddings/weight" else d, t, s) for n, d, t, s in toy(8)]
    put("ct2_import", "zero-width-embedding", SEP.join([model_bin(zero, alias), b"", small_vocab]))
    put("ct2_import", "alias-to-missing", SEP.join([model_bin(toy(8), [("a", "nope")]), b"", small_vocab]))
    put("ct2_import", "bad-config", SEP.join([small, b'{"lang_ids": "x"', small_vocab]))
    put("ct2_import", "empty", b"")


# --- policy and ingest: harness/policy.rs and harness/ingest.rs read these field by field ---
def policy_seeds():
    def case(flags, words, tail=b"", settings=b""):
        b = bytes([flags]) + settings + bytes([len(words)])
        for gap, length, w in words:
            b += bytes([gap, length, w])
        return b + tail

    three = [(50, 40, 0), (10, 30, 1), (10, 50, 2)]
    put("policy", "defaults", case(0, three, bytes([20, 0, 1, 0, 0x40, 0x1F, 0])))
    put("policy", "no-interims", case(1, three, bytes([20, 0, 0, 0, 0x40, 0x06, 3])))
    settings = struct.pack("<7H", 2000, 3000, 2000, 20000, 200, 4000, 1600)
    put("policy", "custom", case(4 | 8, [(10, 99, i % 8) for i in range(12)], bytes([100, 0, 2, 0, 0xA0, 0x0F, 40]), settings))
    nan = bytes([50, 2]) + struct.pack("<HBB", 100, 1, 8) + struct.pack("<f", float("nan")) * 32 + struct.pack("<HBB", 500, 1, 2) + struct.pack("<f", float("inf")) * 8
    put("policy", "nan-audio", case(0, three, nan + bytes([0, 0, 0x40, 0x1F, 0])))
    loud = bytes([10, 1]) + struct.pack("<HBB", 0, 0, 255) + b"\xff\x7f\x00\x80" * 510
    put("policy", "loud-pcm", case(0, [(0, 99, 5)], loud + bytes([0, 0, 0x01, 0x00, 0])))
    put("policy", "silence", case(0, [], bytes([200, 0, 0, 0, 0x80, 0x3E, 0])))
    put("policy", "faults", case(0, three, bytes([20, 0, 1, 2, 3, 2, 4, 3, 5, 0x40, 0x1F, 20])))


def ingest_seeds():
    def case(wild, enc, rate_i, ch, max_chunk, chunks):
        b = bytes([wild | enc, rate_i, ch, 0]) + struct.pack("<H", max_chunk)
        for c in chunks:
            b += struct.pack("<H", len(c)) + c
        return b

    pcm = s16(tone(320, 8000))
    put("ingest", "linear16-8k", case(0, 1, 0, 1, 4000, [pcm[:320], pcm[320:]]))
    put("ingest", "linear16-48k-stereo", case(0, 1, 5, 2, 4000, [pcm, pcm[:8]]))
    put("ingest", "odd-bytes", case(0, 1, 2, 1, 4000, [pcm[:33]]))
    put("ingest", "float32-nan", case(0, 2, 2, 1, 4000, [struct.pack("<f", 0.5) * 4 + struct.pack("<f", float("nan"))]))
    put("ingest", "float32-44k", case(0, 2, 4, 1, 4000, [b"".join(struct.pack("<f", s) for s in tone(441, 44100))]))
    put("ingest", "mulaw", case(0, 3, 0, 1, 4000, [bytes(range(256))]))
    put("ingest", "alaw-8ch", case(0, 4, 3, 8, 4000, [bytes(range(256))]))
    put("ingest", "bad-rate", case(0, 1, 6, 1, 4000, [pcm]))
    put("ingest", "nine-channels", case(0, 1, 0, 9, 4000, [pcm]))
    put("ingest", "oversized-chunk", case(0, 1, 0, 1, 100, [pcm]))
    put("ingest", "unspecified", case(0, 0, 0, 1, 4000, [pcm]))
    put("ingest", "container-encoding", case(0, 7, 0, 1, 4000, [pcm]))
    put("ingest", "flac-encoding", case(0, 5, 0, 1, 4000, [pcm]))
    put("ingest", "float32-huge-44k", case(0, 2, 4, 1, 4000, [struct.pack("<f", 3.4e38) * 441]))
    put("ingest", "wild", bytes([0x80]) + struct.pack("<iii", 99, -16000, -1) + b"\0\0\0")
    put("ingest", "missing-format", bytes([0, 1, 0, 0xFF]))
    put("ingest", "empty-chunks", case(0, 1, 2, 1, 4000, [b"", b"", pcm[:2]]))


if __name__ == "__main__":
    audio_seeds()
    ct2_seeds()
    policy_seeds()
    ingest_seeds()
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(d.name, len(files), "files", sum(f.stat().st_size for f in files), "bytes")
