/*
 * whisper_c_driver: the whisper.cpp C peer of `scripts/bench` (NOT whisper-cli itself).
 *
 * whisper-rs-sys 0.15 vendors whisper.cpp 1.8.3 without its examples/, so whisper-cli cannot
 * be built from the vendored sources. This program follows whisper-cli's path for a file
 * (read a 16 kHz mono WAV, whisper_init_from_file_with_params, one whisper_full call over the
 * whole file, print the text and whisper_print_timings) through the public whisper.h API,
 * linked against the very static libraries (libwhisper.a, libggml*.a) that the cargo build of
 * whisper-rs-sys produced. "ours / whisper.cpp C" therefore isolates what our Rust layer
 * (whisper-rs, engine/, client/, audio decoding) adds on top of the same C code.
 *
 * Decoding parameters are those of our engine (engine/src/session.rs), not whisper-cli's
 * defaults (whisper-cli uses beam search with 5 beams and flash attention by default):
 * greedy, best_of 1, temperature fallback in steps of 0.2, no_context, suppress_blank,
 * suppress_nst, token timestamps on (ours computes word times), the given language ("auto"
 * detects), the given thread count, flash attention off unless --flash-attn (ours turns it
 * on only with a GPU backend).
 *
 * Usage: whisper_c_driver MODEL.bin AUDIO.wav [--threads N] [--language CODE] [--flash-attn]
 *          [--gpu] [--max-tokens N] [--no-fallback]
 *   --gpu uses the GPU backend the libraries were built with (CUDA builds: scripts/build-cuda
 *   leaves them in the whisper-rs-sys out/ folder under target/cuda); --max-tokens and
 *   --no-fallback mirror `transcribe --max-tokens N --no-fallback` (bounded work per window,
 *   for models with random weights).
 * Output (stdout): one JSON object {"load_s", "processing_s", "audio_s", "language", "text"}.
 *   load_s: whisper_init_from_file_with_params; processing_s: reading the WAV + whisper_full
 *   (as ours times file decoding + inference).
 * Build: see build_c_driver() in bench/bench.py (system cc, -lstdc++ -lm -lpthread -fopenmp
 * as the static libraries need).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "whisper.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

/* Reads a RIFF/WAVE file of 16 kHz mono PCM s16 or float32 into *out (caller frees). */
static int read_wav(const char *path, float **out, size_t *n_out) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "whisper_c_driver: cannot open %s\n", path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size);
    if (!buf || fread(buf, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(buf);
        fprintf(stderr, "whisper_c_driver: cannot read %s\n", path);
        return -1;
    }
    fclose(f);
    if (size < 12 || memcmp(buf, "RIFF", 4) != 0 || memcmp(buf + 8, "WAVE", 4) != 0) {
        free(buf);
        fprintf(stderr, "whisper_c_driver: %s is not a RIFF/WAVE file\n", path);
        return -1;
    }
    int format = 0, channels = 0, bits = 0;
    uint32_t rate = 0;
    long pos = 12;
    while (pos + 8 <= size) {
        uint32_t len = le32(buf + pos + 4);
        const unsigned char *body = buf + pos + 8;
        if (memcmp(buf + pos, "fmt ", 4) == 0 && len >= 16) {
            format = le16(body);
            channels = le16(body + 2);
            rate = le32(body + 4);
            bits = le16(body + 14);
            if (format == 0xFFFE && len >= 26) format = le16(body + 24); /* extensible */
        } else if (memcmp(buf + pos, "data", 4) == 0) {
            if ((long)len > size - pos - 8) len = (uint32_t)(size - pos - 8);
            if (channels != 1 || rate != WHISPER_SAMPLE_RATE ||
                !((format == 1 && bits == 16) || (format == 3 && bits == 32))) {
                free(buf);
                fprintf(stderr,
                        "whisper_c_driver: %s: need 16 kHz mono s16 or f32 PCM (format %d, %d ch, "
                        "%u Hz, %d bits)\n",
                        path, format, channels, rate, bits);
                return -1;
            }
            size_t n = len / (size_t)(bits / 8);
            float *s = malloc(n * sizeof(float) + 1);
            if (!s) {
                free(buf);
                return -1;
            }
            for (size_t i = 0; i < n; i++) {
                if (bits == 16) {
                    s[i] = (float)(int16_t)le16(body + 2 * i) / 32768.0f;
                } else {
                    uint32_t u = le32(body + 4 * i);
                    memcpy(&s[i], &u, 4);
                }
            }
            free(buf);
            *out = s;
            *n_out = n;
            return 0;
        }
        pos += 8 + (long)len + (len & 1);
    }
    free(buf);
    fprintf(stderr, "whisper_c_driver: %s has no data chunk\n", path);
    return -1;
}

static void json_string(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            printf("\\%c", c);
        } else if (c < 0x20) {
            printf("\\u%04x", c);
        } else {
            putchar(c);
        }
    }
    putchar('"');
}

int main(int argc, char **argv) {
    const char *model = NULL, *audio = NULL, *language = "auto";
    int threads = 1, flash_attn = 0, use_gpu = 0, max_tokens = 0, fallback = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--language") == 0 && i + 1 < argc) {
            language = argv[++i];
        } else if (strcmp(argv[i], "--flash-attn") == 0) {
            flash_attn = 1;
        } else if (strcmp(argv[i], "--gpu") == 0) {
            use_gpu = 1;
        } else if (strcmp(argv[i], "--max-tokens") == 0 && i + 1 < argc) {
            max_tokens = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--no-fallback") == 0) {
            fallback = 0;
        } else if (!model) {
            model = argv[i];
        } else if (!audio) {
            audio = argv[i];
        } else {
            fprintf(stderr, "whisper_c_driver: unexpected argument %s\n", argv[i]);
            return 64;
        }
    }
    if (!model || !audio || threads < 1) {
        fprintf(stderr, "usage: whisper_c_driver MODEL.bin AUDIO.wav [--threads N] "
                        "[--language CODE] [--flash-attn] [--gpu] [--max-tokens N] "
                        "[--no-fallback]\n");
        return 64;
    }

    double t0 = now_s();
    struct whisper_context_params cparams = whisper_context_default_params();
    cparams.use_gpu = use_gpu != 0;
    cparams.flash_attn = flash_attn != 0;
    struct whisper_context *ctx = whisper_init_from_file_with_params(model, cparams);
    if (!ctx) {
        fprintf(stderr, "whisper_c_driver: failed to load %s\n", model);
        return 2;
    }
    double t1 = now_s();

    float *samples = NULL;
    size_t n = 0;
    if (read_wav(audio, &samples, &n) != 0) {
        whisper_free(ctx);
        return 2;
    }
    struct whisper_full_params p = whisper_full_default_params(WHISPER_SAMPLING_GREEDY);
    p.greedy.best_of = 1;
    p.n_threads = threads;
    p.language = language;
    p.translate = false;
    p.no_context = true;
    p.suppress_blank = true;
    p.suppress_nst = true;
    p.token_timestamps = true;
    p.temperature_inc = fallback ? 0.2f : 0.0f;
    p.max_tokens = max_tokens;
    p.print_progress = false;
    p.print_realtime = false;
    p.print_special = false;
    p.print_timestamps = false;
    if (whisper_full(ctx, p, samples, (int)n) != 0) {
        fprintf(stderr, "whisper_c_driver: whisper_full failed\n");
        free(samples);
        whisper_free(ctx);
        return 2;
    }
    double t2 = now_s();

    size_t cap = 1024, len = 0;
    char *text = malloc(cap);
    text[0] = '\0';
    for (int i = 0; i < whisper_full_n_segments(ctx); i++) {
        const char *seg = whisper_full_get_segment_text(ctx, i);
        while (*seg == ' ') seg++;
        size_t k = strlen(seg);
        if (k == 0) continue;
        while (len + k + 2 > cap) {
            cap *= 2;
            text = realloc(text, cap);
        }
        if (len > 0) text[len++] = ' ';
        memcpy(text + len, seg, k);
        len += k;
        text[len] = '\0';
    }
    whisper_print_timings(ctx); /* to stderr, as whisper-cli */
    int lang_id = whisper_full_lang_id(ctx);
    printf("{\"load_s\": %.6f, \"processing_s\": %.6f, \"audio_s\": %.6f, \"language\": ",
           t1 - t0, t2 - t1, (double)n / WHISPER_SAMPLE_RATE);
    json_string(whisper_is_multilingual(ctx) && lang_id >= 0 ? whisper_lang_str(lang_id) : "en");
    printf(", \"text\": ");
    json_string(text);
    printf("}\n");
    free(text);
    free(samples);
    whisper_free(ctx);
    return 0;
}
