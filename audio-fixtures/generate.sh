#!/usr/bin/env bash
# Regenerates every audio fixture in this folder, deterministically.
#
#   bash audio-fixtures/generate.sh          # from anywhere; writes beside this script
#
# Needs espeak-ng and sox (with MP3 write support from libsox-fmt-mp3). When one is
# missing and the script runs as root, it installs them with apt-get; otherwise it stops
# and says what to install.
#
# Determinism: espeak-ng output is fixed for a given espeak-ng version; every sox call
# runs with `-R` (fixed seed for `synth` noise) and `-D` (no dither, so no random
# low-order bits are added on format conversion). The same tool versions therefore give
# byte-identical files; `SHA256SUMS` records the result of the last run and the README
# names the versions that produced it. Other versions give slightly different audio and
# checksums, but the same texts, layout and manifest.
#
# Outputs (all paths relative to this folder):
#   speech/   espeak-ng English clips, 16 kHz mono s16 WAV, `<name>.txt` beside each
#   formats/  one speech clip converted to other rates, depths, encodings and containers
#   signals/  silence, noise, a tone, clipped speech, 48 kHz stereo and 8 kHz speech
#   corrupt/  files that decoders must reject cleanly
#   README.md, manifest.tsv, SHA256SUMS
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

# ---------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------

sox_has_mp3() {
    sox -h 2>/dev/null | grep -A1 '^AUDIO FILE FORMATS:' | grep -qw mp3
}

need_install=()
command -v espeak-ng >/dev/null 2>&1 || need_install+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need_install+=(sox)
command -v ffmpeg >/dev/null 2>&1 || need_install+=(ffmpeg)
if ! command -v sox >/dev/null 2>&1 || ! sox_has_mp3; then
    need_install+=(libsox-fmt-mp3)
fi
if ((${#need_install[@]} > 0)); then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing: ${need_install[*]}" >&2
        if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_install[@]}" >/dev/null; then
            apt-get update >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_install[@]}" >/dev/null
        fi
    else
        echo "missing: ${need_install[*]} (install them, e.g. apt-get install -y ${need_install[*]})" >&2
        exit 1
    fi
fi
sox_has_mp3 || { echo "sox cannot write MP3 even after installing libsox-fmt-mp3" >&2; exit 1; }

# -R: repeatable random numbers (synth noise); -D: no dither; -V1: errors only.
SOX=(sox -R -D -V1)
# The same, but also keep warnings quiet for the one deliberate clipping step.
SOX_QUIET=(sox -R -D -V0)

ESPEAK_VERSION="$(espeak-ng --version | sed -n 's/^eSpeak NG text-to-speech: \([^ ]*\).*/\1/p')"
SOX_VERSION="$(sox --version | sed -n 's/.*SoX v\([^ ]*\).*/\1/p')"
espeak_pkg="$(dpkg-query -W -f '${Version}' espeak-ng-data 2>/dev/null || true)"
sox_pkg="$(dpkg-query -W -f '${Version}' libsox3 2>/dev/null || true)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# All fixture audio is 16 kHz mono signed 16-bit unless a name says otherwise.
RATE=16000
TARGET=(-r "$RATE" -c 1 -b 16 -e signed-integer)

# Sample count and duration helpers (sample counts keep the arithmetic exact).
samples() { soxi -s "$1"; }
seconds() { awk -v n="$1" -v r="$2" 'BEGIN { printf "%.3f", n / r }'; }

# speak VOICE WPM TEXT OUT: espeak-ng -> 16 kHz mono s16, peak normalised to -3 dBFS.
speak_raw() {
    local voice="$1" wpm="$2" text="$3" out="$4"
    espeak-ng -v "$voice" -s "$wpm" -w "$tmp/espeak.wav" -- "$text"
    "${SOX[@]}" "$tmp/espeak.wav" "${TARGET[@]}" "$out" gain -n -3
}

# Same, with espeak's own leading and trailing silence trimmed (below -60 dBFS), so that
# segment boundaries computed from sample counts are tight around the speech.
speak_trimmed() {
    local voice="$1" wpm="$2" text="$3" out="$4"
    speak_raw "$voice" "$wpm" "$text" "$tmp/untrimmed.wav"
    "${SOX[@]}" "$tmp/untrimmed.wav" "$out" \
        silence 1 0.005 0.1% reverse silence 1 0.005 0.1% reverse
}

# silence SECONDS OUT: digital silence in the target format.
silence() {
    "${SOX[@]}" -n "${TARGET[@]}" "$2" trim 0 "$1"
}

check_tsv_field() {
    case "$1" in
        *$'\t'* | *$'\n'*) echo "field contains a tab or newline: $1" >&2; exit 1 ;;
    esac
}

rm -rf speech formats signals corrupt
mkdir -p speech formats signals corrupt

manifest="$tmp/manifest.tsv"
printf 'id\tpath\tkind\treference\n' >"$manifest"
manifest_row() { # id path kind reference
    check_tsv_field "$4"
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$manifest"
}

speech_table="$tmp/speech_table.md"
speech_table_row() { # file voice wpm path text
    local dur
    dur="$(seconds "$(samples "$4")" "$RATE")"
    # shellcheck disable=SC2016 # literal backticks for Markdown code
    printf '| `%s` | %s | %s | %s | %s |\n' "$1" "$2" "$3" "$dur" "$5" >>"$speech_table"
}

# ---------------------------------------------------------------------------
# speech/: short clips (name | voice | words per minute | text)
# ---------------------------------------------------------------------------
# Plain, common words only: no digits, abbreviations or names, which espeak-ng reads
# oddly. espeak's own leading and trailing silence is trimmed, then each clip gets exactly
# 0.2 s of digital silence before the speech and 0.3 s after. `short` is
# kept short (under 3 s) because it is the source of formats/, whose 48 kHz stereo and
# 24-bit files are large.
clips=(
    "park|en-us|160|The weather was warm and sunny this morning. We walked to the park and sat under a tall tree."
    "window|en-gb|150|Please close the window before you leave the house. It might rain this afternoon."
    "market|en-gb-x-rp|145|She went to the market to buy bread, milk and fruit. Everyone there was very kind to her."
    "meeting|en-us+f3|175|Our team will meet again next week to talk about the new plan. Everyone should bring their notes and a few good questions."
    "dog|en+m2|130|The old dog slept by the fire all evening. When the children came home, he wagged his tail."
    "cooking|en-us+f2|185|Cooking at home is not as hard as it seems. Start with a simple meal, and taste the food as you go."
    "short|en-gb+f4|170|Please close the door. It is cold."
)

for clip in "${clips[@]}"; do
    IFS='|' read -r name voice wpm text <<<"$clip"
    speak_trimmed "$voice" "$wpm" "$text" "$tmp/raw.wav"
    "${SOX[@]}" "$tmp/raw.wav" "speech/$name.wav" pad 0.2 0.3
    printf '%s\n' "$text" >"speech/$name.txt"
    manifest_row "speech_$name" "speech/$name.wav" speech "$text"
    speech_table_row "speech/$name.wav" "$voice" "$wpm" "speech/$name.wav" "$text"
done

# concat_with_gaps OUT SEGMENTS_TSV LEAD_S TAIL_S VOICE WPM GAP_S... -- SENTENCE...
# Builds lead silence, sentence 1, gap 1, sentence 2, ..., tail silence, and writes one
# `start_s end_s text` row per sentence (times from exact sample counts).
concat_with_gaps() {
    local out="$1" seg="$2" lead="$3" tail="$4" voice="$5" wpm="$6"
    shift 6
    local gaps=()
    while [[ "$1" != "--" ]]; do gaps+=("$1"); shift; done
    shift
    local parts=() pos=0 i=0 n
    printf 'start_s\tend_s\ttext\n' >"$seg"
    silence "$lead" "$tmp/lead.wav"
    parts+=("$tmp/lead.wav")
    pos=$(samples "$tmp/lead.wav")
    for sentence in "$@"; do
        speak_trimmed "$voice" "$wpm" "$sentence" "$tmp/sent_$i.wav"
        n=$(samples "$tmp/sent_$i.wav")
        check_tsv_field "$sentence"
        printf '%s\t%s\t%s\n' "$(seconds "$pos" "$RATE")" "$(seconds $((pos + n)) "$RATE")" \
            "$sentence" >>"$seg"
        parts+=("$tmp/sent_$i.wav")
        pos=$((pos + n))
        if ((i < $# - 1)); then
            silence "${gaps[$((i % ${#gaps[@]}))]}" "$tmp/gap_$i.wav"
            parts+=("$tmp/gap_$i.wav")
            pos=$((pos + $(samples "$tmp/gap_$i.wav")))
        fi
        i=$((i + 1))
    done
    silence "$tail" "$tmp/tail.wav"
    parts+=("$tmp/tail.wav")
    "${SOX[@]}" "${parts[@]}" "$out"
}

# speech/pauses.wav: three sentences with 1.6 s and 2.0 s of digital silence between them
# (endpointing: each sentence should become its own final utterance).
pauses_voice=en-us
pauses_wpm=160
pauses=(
    "Good morning, and thank you for calling."
    "Please hold the line for a moment."
    "Someone will be with you very soon."
)
concat_with_gaps speech/pauses.wav speech/pauses.segments.tsv 0.5 1.0 "$pauses_voice" "$pauses_wpm" \
    1.6 2.0 -- "${pauses[@]}"
pauses_text="${pauses[*]}"
printf '%s\n' "$pauses_text" >speech/pauses.txt
manifest_row speech_pauses speech/pauses.wav speech "$pauses_text"
speech_table_row speech/pauses.wav "$pauses_voice" "$pauses_wpm" speech/pauses.wav "$pauses_text"

# speech/long_60s.wav: a short story read with 0.5 s pauses between sentences, padded with
# silence to exactly 60 s (benchmarks).
long_voice=en-us
long_wpm=165
long=(
    "Every summer, my family drove to a small house by the lake."
    "The road was long, and we always stopped for ice cream on the way."
    "My father liked to drive with the windows open, even when it was cold."
    "My mother told us stories from the front seat."
    "When we finally arrived, we ran down to the water to see if it was warm."
    "It was never warm, but we jumped in anyway."
    "In the evenings, we cooked dinner outside and watched the sun go down."
    "The birds grew quiet, and the sky turned orange, then pink, then dark blue."
    "My brother and I counted the stars until we fell asleep."
    "In the morning, the lake was still and the air smelled fresh and clean."
    "We spent the days swimming, fishing, and walking in the woods."
    "It was the best part of the whole year."
    "I still think about that little house whenever the weather gets warm."
    "Now I have children of my own."
    "This summer, I want to take them to the lake."
)
concat_with_gaps "$tmp/long.wav" speech/long_60s.segments.tsv 0.3 0.0 "$long_voice" "$long_wpm" \
    0.5 -- "${long[@]}"
long_samples=$(samples "$tmp/long.wav")
want=$((60 * RATE))
if ((long_samples > want)); then
    echo "long_60s: speech is $(seconds "$long_samples" "$RATE") s, more than 60 s; shorten the text" >&2
    exit 1
fi
"${SOX[@]}" "$tmp/long.wav" speech/long_60s.wav pad 0 "$((want - long_samples))s"
long_text="${long[*]}"
printf '%s\n' "$long_text" >speech/long_60s.txt
manifest_row speech_long_60s speech/long_60s.wav speech "$long_text"
speech_table_row speech/long_60s.wav "$long_voice" "$long_wpm" speech/long_60s.wav "$long_text"

# ---------------------------------------------------------------------------
# formats/: one clip in other encodings
# ---------------------------------------------------------------------------
fmt_src=speech/short.wav
fmt_text="$(cat speech/short.txt)"
formats_readme="$tmp/formats_readme.md"
{
    echo "# formats/"
    echo
    echo "Generated by \`../generate.sh\`; do not edit by hand. Every file here is"
    echo "\`$fmt_src\` (reference text: \`speech/short.txt\`) converted with sox (Opus: ffmpeg)."
    echo "A decoder that resamples to 16 kHz mono should get audio close to the source; the"
    echo "FLAC file decodes to exactly the source samples."
    echo
} >"$formats_readme"

# fmt NAME DESCRIPTION SOX_OUTPUT_ARGS...
fmt() {
    local name="$1" desc="$2"
    shift 2
    "${SOX[@]}" "$fmt_src" "$@" "formats/$name"
    echo "- \`$name\`: $desc; from \`$fmt_src\`." >>"$formats_readme"
    manifest_row "format_${name%.*}" "formats/$name" format "$fmt_text"
}
fmt wav_48k_stereo_s16.wav "WAV, 48 kHz, 2 channels (identical), signed 16-bit PCM" \
    -r 48000 -c 2 -b 16 -e signed-integer
fmt wav_8k_mono_s16.wav "WAV, 8 kHz, mono, signed 16-bit PCM" \
    -r 8000 -c 1 -b 16 -e signed-integer
fmt wav_44k1_mono_s24.wav "WAV (WAVE_FORMAT_EXTENSIBLE header), 44.1 kHz, mono, signed 24-bit PCM" \
    -r 44100 -c 1 -b 24 -e signed-integer
fmt wav_16k_mono_f32.wav "WAV (format 3, IEEE float, with fact chunk), 16 kHz, mono, 32-bit float" \
    -r 16000 -c 1 -b 32 -e floating-point
fmt wav_16k_mono_u8.wav "WAV, 16 kHz, mono, unsigned 8-bit PCM" \
    -r 16000 -c 1 -b 8 -e unsigned-integer
fmt flac_16k_mono.flac "FLAC, 16 kHz, mono, 16-bit (lossless)" \
    -r 16000 -c 1 -b 16 -C 5
fmt mp3_44k1_stereo.mp3 "MP3 (LAME via libsox-fmt-mp3), 44.1 kHz, stereo, 128 kbit/s CBR; has encoder delay and padding" \
    -r 44100 -c 2 -C 128
fmt ogg_48k_stereo.ogg "Ogg Vorbis, 48 kHz, stereo, quality 3" \
    -r 48000 -c 2 -C 3

# Opus through ffmpeg's libopus (sox has no Opus writer). `bitexact` keeps ffmpeg's version
# string, random stream serials and UIDs out of the files, so reruns give the same bytes.
# fmt_ffmpeg NAME DESCRIPTION FFMPEG_OUTPUT_ARGS...
fmt_ffmpeg() {
    local name="$1" desc="$2"
    shift 2
    ffmpeg -nostdin -loglevel error -y -i "$fmt_src" -fflags +bitexact -flags:a +bitexact \
        "$@" "formats/$name"
    echo "- \`$name\`: $desc; from \`$fmt_src\` (ffmpeg)." >>"$formats_readme"
    manifest_row "format_${name%.*}" "formats/$name" format "$fmt_text"
}
fmt_ffmpeg opus_48k_mono.opus "Ogg Opus (voice-note style), 48 kHz, mono, 24 kbit/s VBR" \
    -ac 1 -c:a libopus -b:a 24k -application voip
fmt_ffmpeg webm_48k_stereo_opus.webm "WebM with Opus (as browsers' MediaRecorder writes), 48 kHz, stereo, 64 kbit/s" \
    -ac 2 -c:a libopus -b:a 64k

# ---------------------------------------------------------------------------
# signals/
# ---------------------------------------------------------------------------
# Noise levels: the gains below were chosen by measuring the output with
# `sox FILE -n stats` (SoX 14.4.2) so that both noises have an RMS of about -30 dBFS. Only
# white and pink noise are kept (brown would add another 320 KB for little new coverage).
"${SOX[@]}" -n "${TARGET[@]}" signals/silence_10s.wav trim 0 10
"${SOX[@]}" -n "${TARGET[@]}" signals/white_noise_10s.wav synth 10 whitenoise gain -20.2
"${SOX[@]}" -n "${TARGET[@]}" signals/pink_noise_10s.wav synth 10 pinknoise gain -16.3
"${SOX[@]}" -n "${TARGET[@]}" signals/tone_1khz_3s.wav synth 3 sine 1000 gain -6
"${SOX_QUIET[@]}" speech/window.wav signals/speech_clipped.wav gain 20
# 48 kHz stereo with unequal channels (right 6 dB below left) so a downmix is not a copy
# of one channel; a separate short sentence keeps the file small.
stereo_voice=en-us+m1
stereo_wpm=150
stereo_text="Turn off the lights, please."
speak_trimmed "$stereo_voice" "$stereo_wpm" "$stereo_text" "$tmp/stereo_src.wav"
"${SOX[@]}" "$tmp/stereo_src.wav" -r 48000 -c 2 -b 16 -e signed-integer \
    signals/speech_48k_stereo.wav pad 0.2 0.3 remix 1 1v0.5
"${SOX[@]}" speech/market.wav -r 8000 -c 1 -b 16 -e signed-integer signals/speech_8k_mono.wav

manifest_row signal_silence_10s signals/silence_10s.wav signal ""
manifest_row signal_white_noise_10s signals/white_noise_10s.wav signal ""
manifest_row signal_pink_noise_10s signals/pink_noise_10s.wav signal ""
manifest_row signal_tone_1khz_3s signals/tone_1khz_3s.wav signal ""
manifest_row signal_speech_clipped signals/speech_clipped.wav signal "$(cat speech/window.txt)"
manifest_row signal_speech_48k_stereo signals/speech_48k_stereo.wav signal "$stereo_text"
manifest_row signal_speech_8k_mono signals/speech_8k_mono.wav signal "$(cat speech/market.txt)"

# ---------------------------------------------------------------------------
# corrupt/
# ---------------------------------------------------------------------------
# sox writes 16-bit PCM WAV with the canonical 44-byte header ("data" tag at byte 36);
# checked rather than assumed.
src=speech/dog.wav
hdr=44
[[ "$(head -c 40 "$src" | tail -c 4)" == data ]] ||
    { echo "unexpected WAV header layout in $src" >&2; exit 1; }
# Header promises the whole clip; only the first 0.5 s of samples are present.
head -c $((hdr + RATE)) "$src" >corrupt/truncated.wav
# Header cut off in the middle of the fmt chunk.
head -c 20 "$src" >corrupt/truncated_header.wav
# 8000 pseudo-random bytes (fixed seed) with no RIFF header.
"${SOX[@]}" -n -t raw -r 8000 -c 1 -b 8 -e unsigned-integer corrupt/garbage.wav synth 1 whitenoise
# Zero bytes.
: >corrupt/empty.wav
# A valid 44-byte header describing 16 kHz mono s16 and no samples at all.
"${SOX[@]}" -n "${TARGET[@]}" corrupt/header_only.wav trim 0 0
# Plain text with an audio extension.
printf 'This is a plain text file, not audio.\n' >corrupt/not_audio.mp3
# Opus files cut short: a WebM inside its first cluster, an Ogg Opus inside its headers.
webm=formats/webm_48k_stereo_opus.webm
head -c $(($(stat -c %s "$webm") / 2)) "$webm" >corrupt/truncated_opus.webm
head -c 40 formats/opus_48k_mono.opus >corrupt/truncated_header.opus

for f in truncated truncated_header garbage empty header_only; do
    manifest_row "corrupt_$f" "corrupt/$f.wav" corrupt ""
done
manifest_row corrupt_not_audio corrupt/not_audio.mp3 corrupt ""
manifest_row corrupt_truncated_opus corrupt/truncated_opus.webm corrupt ""
manifest_row corrupt_truncated_header_opus corrupt/truncated_header.opus corrupt ""

# ---------------------------------------------------------------------------
# Indexes
# ---------------------------------------------------------------------------
cp "$manifest" manifest.tsv
cp "$formats_readme" formats/README.md

dups=$(cut -f1 manifest.tsv | sort | uniq -d)
[[ -z "$dups" ]] || { echo "duplicate manifest ids: $dups" >&2; exit 1; }
while IFS=$'\t' read -r _ path _ _; do
    [[ "$path" == path || -e "$path" ]] || { echo "manifest names missing file $path" >&2; exit 1; }
done <manifest.tsv

total_kb=$(du -ck speech formats signals corrupt | tail -n1 | cut -f1)

cat >README.md <<EOF
# audio-fixtures

Small, synthetic, redistributable audio for tests and benchmarks. Everything here except
\`generate.sh\` is generated by it; do not edit the outputs by hand. To regenerate:

    bash audio-fixtures/generate.sh

It uses espeak-ng (speech), sox (conversion, noise, tones) and ffmpeg (Opus) and installs
them with apt-get when run as root without them (\`espeak-ng sox libsox-fmt-mp3 ffmpeg\`). The outputs are
deterministic for given tool versions (\`sox -R\` fixes the noise seed, \`-D\` turns dither
off); \`SHA256SUMS\` holds the checksums of this generation, made with espeak-ng
$ESPEAK_VERSION (Debian $espeak_pkg) and SoX $SOX_VERSION (Debian $sox_pkg). Check with
\`cd audio-fixtures && sha256sum -c SHA256SUMS\`. Other versions give slightly different
samples, but the same files, texts and manifest. Total size about ${total_kb} KiB.

## Layout
- \`speech/\`: English speech from espeak-ng, 16 kHz mono signed 16-bit WAV, peak-normalised
  to -3 dBFS; \`<name>.txt\` beside each holds the exact text spoken (one line).
  - Short clips: espeak's own leading and trailing silence trimmed, then exactly 0.2 s of
    digital silence before the speech and 0.3 s after; each uses a different
    voice. \`short.wav\` (under 3 s) is the source of \`formats/\`.
  - \`pauses.wav\`: three sentences separated by 1.6 s and 2.0 s of digital silence, with
    0.5 s before and 1.0 s after (endpointing tests: three final utterances expected).
  - \`long_60s.wav\`: fifteen sentences with 0.5 s of digital silence between them, padded
    with silence to exactly 60.000 s (benchmarks).
  - \`pauses.segments.tsv\`, \`long_60s.segments.tsv\`: \`start_s end_s text\` per sentence,
    from exact sample counts; each span is tight around the speech (espeak's own leading and
    trailing silence below -60 dBFS trimmed), and everything outside the spans is exact zeros.
- \`formats/\`: \`speech/short.wav\` converted to other containers, rates and sample formats
  (WAV s16/s24 extensible/f32/u8, FLAC, MP3, Ogg Vorbis); see \`formats/README.md\`.
- \`signals/\` (16 kHz mono s16 unless the name says otherwise):
  - \`silence_10s.wav\`: 10 s of exact zeros.
  - \`white_noise_10s.wav\`, \`pink_noise_10s.wav\`: 10 s of noise, RMS about -30 dBFS.
    These two and the silence should give an empty transcript.
  - \`tone_1khz_3s.wav\`: 1 kHz sine, 3 s, peak -6 dBFS (no speech).
  - \`speech_clipped.wav\`: \`speech/window.wav\` with +20 dB gain, hard clipped at full scale.
  - \`speech_48k_stereo.wav\`: a separate sentence (espeak-ng \`$stereo_voice\`, $stereo_wpm wpm:
    "$stereo_text"), 48 kHz, 2 channels, the right one 6 dB quieter than the left.
  - \`speech_8k_mono.wav\`: \`speech/market.wav\` resampled to 8 kHz.
- \`corrupt/\`: files a decoder must reject with an error, never a panic or a hang:
  - \`truncated.wav\`: the header of \`speech/dog.wav\` (which promises the whole clip) followed by
    only its first 0.5 s of samples.
  - \`truncated_header.wav\`: the first 20 bytes of a WAV file (ends inside the fmt chunk).
  - \`garbage.wav\`: 8000 pseudo-random bytes, no RIFF header.
  - \`empty.wav\`: 0 bytes.
  - \`header_only.wav\`: a valid 44-byte WAV header (16 kHz mono s16) with 0 samples. Decoding
    it may reasonably succeed with no audio; it must not fail in any other way.
  - \`not_audio.mp3\`: a line of plain text.

## Transcription check
When these files were generated they were transcribed with Whisper tiny.en (faster-whisper,
int8, greedy, CPU) and scored after lower-casing and removing punctuation: every 16 kHz
speech clip, the clipped speech, the 48 kHz stereo sentence and every \`formats/\` file except
the 8 kHz one came out at 0 to 6% WER (\`long_60s.wav\` 3%); the 8 kHz files lose everything
above 4 kHz and came out at 22 to 29%; silence, both noises and the tone gave empty text.
espeak-ng is not a human voice, so leave tests some margin (for example WER at most 15% at
16 kHz and 40% at 8 kHz with tiny.en). These figures are not recomputed by \`generate.sh\`.

## manifest.tsv
UTF-8, tab-separated, one header line, columns \`id path kind reference\`:
\`path\` is relative to this folder; \`kind\` is \`speech\`, \`format\`, \`signal\` or \`corrupt\`;
\`reference\` is the exact spoken text (as in the \`.txt\` files; punctuation included,
normalise before scoring) and is empty where nothing is said or the file is corrupt.
No field contains a tab or a newline.

## Speech clips
Voices are espeak-ng voice names (\`+f3\`, \`+m3\` etc. are espeak variants); speed is in
words per minute (\`espeak-ng -s\`).

| file | voice | speed (wpm) | duration (s) | text |
| --- | --- | --- | --- | --- |
$(cat "$speech_table")
EOF

# Checksums of every generated file (not of this script or the checksum file itself).
find speech formats signals corrupt README.md manifest.tsv -type f -print0 | LC_ALL=C sort -z |
    xargs -0 sha256sum >SHA256SUMS

echo "audio-fixtures: $(($(wc -l <manifest.tsv) - 1)) fixtures, ${total_kb} KiB" >&2
