#!/usr/bin/env bash
# Checks deploy/container/Containerfile and Containerfile.cuda as far as a machine can that
# cannot pull base images and should not compile (docs/DEPLOY.md "What was run").
#
#   tests/deploy/container-check.sh [--build-deps] [--no-runtime]
#   TRANSCRIBE_BIN_DIR=DIR tests/deploy/container-check.sh ...
#
# 1. Makes a Debian 12 root with debootstrap (minbase) and imports it into podman under the
#    names the Containerfiles use: debian:bookworm-slim, and stand-ins for
#    rust:RUST-bookworm and nvidia/cuda:CUDA-{devel,runtime}-ubuntu24.04 (Debian without Rust
#    or CUDA, with empty /usr/local/cargo and /usr/local/rustup so that COPY --from works).
# 2. Builds the real `runtime-base` stage of both files (the user and /models; nothing is
#    installed: the binaries are built without microphone capture, so no libasound2, and
#    the base images already have libc6, libgcc-s1 and libstdc++6). The CUDA one runs on the
#    Debian stand-in.
# 3. Runs the real `runtime` stage of the CPU Containerfile (its ldd check: no libasound, no
#    missing library; `--version`, ENV, USER, ENTRYPOINT) with already-built binaries
#    standing in for the `build` stage's output, prints what the image says about itself,
#    and runs `transcribe-server --help` in it as the image's user. The binaries come from
#    $TRANSCRIBE_BIN_DIR (default target/release) and must be built as the image builds
#    them, without the `capture` feature; a default build links libasound.so.2, which the
#    runtime stage refuses, so the script stops before building anything. Build them into
#    a target folder of their own (target/release keeps the default build):
#      CARGO_TARGET_DIR=target/container cargo build --release --locked \
#        -p transcribe-server -p transcribe-cli --no-default-features \
#        --features transcribe-server/whisper
#      TRANSCRIBE_BIN_DIR=target/container/release tests/deploy/container-check.sh
# 4. Builds deploy/container/Containerfile.models on top of that image with a stand-in
#    ggml file and lists /models as the image's user.
# 5. With --build-deps: builds the real `build-deps` stages too (apt-get of cmake, clang,
#    libclang-dev, g++: some hundreds of MB from Debian's mirror). The `build` stages
#    (cargo build) are never run here.
# --no-runtime leaves out steps 3 and 4 (no binaries needed).
#
# Needs root, podman, debootstrap and Debian's package mirror. Containers are built with
# --isolation=chroot (this machine's cgroup setup refuses crun); nothing is `podman run`.
set -euo pipefail
cd "$(dirname "$0")/../.."

build_deps=false
runtime=true
for arg in "$@"; do
  case $arg in
    --build-deps) build_deps=true ;;
    --no-runtime) runtime=false ;;
    *) echo "usage: $0 [--build-deps] [--no-runtime]" >&2; exit 2 ;;
  esac
done
bin_dir=${TRANSCRIBE_BIN_DIR:-target/release}
if $runtime; then
  for b in transcribe-server transcribe; do
    [ -x "$bin_dir/$b" ] || { echo "$bin_dir/$b missing: build it first (see the top of $0)" >&2; exit 1; }
    if ldd "$bin_dir/$b" | grep libasound >/dev/null; then
      echo "$bin_dir/$b links libasound.so.2: a build with the \`capture\` feature, which the" \
        "image's runtime stage refuses. Build without it as the top of $0 says and set" \
        "TRANSCRIBE_BIN_DIR, or pass --no-runtime." >&2
      exit 1
    fi
  done
fi

work=${DEPLOY_CHECK_DIR:-/tmp/transcribe-container-check}
rust_version=$(sed -n 's/^ARG RUST_VERSION=//p' deploy/container/Containerfile)
cuda_version=$(sed -n 's/^ARG CUDA_VERSION=//p' deploy/container/Containerfile.cuda)
ubuntu=$(sed -n 's/^ARG UBUNTU=//p' deploy/container/Containerfile.cuda)
build=(podman build --pull=never --isolation=chroot)

mkdir -p "$work"
if [ ! -x "$work/rootfs/bin/sh" ]; then
  echo "== debootstrap --variant=minbase bookworm"
  debootstrap --variant=minbase bookworm "$work/rootfs" > "$work/debootstrap.log"
fi
if ! podman image exists localhost/debian:bookworm-slim; then
  echo "== podman import -> debian:bookworm-slim"
  tar -C "$work/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - localhost/debian:bookworm-slim
fi
printf 'FROM localhost/debian:bookworm-slim\nRUN mkdir -p /usr/local/cargo/bin /usr/local/rustup\n' \
  > "$work/Containerfile.standin"
"${build[@]}" -q -f "$work/Containerfile.standin" -t localhost/transcribe-check:standin "$work" >/dev/null
for name in "rust:${rust_version}-bookworm" "nvidia/cuda:${cuda_version}-devel-${ubuntu}" \
            "nvidia/cuda:${cuda_version}-runtime-${ubuntu}"; do
  podman tag localhost/transcribe-check:standin "localhost/$name"
done

echo "== Containerfile --target runtime-base"
"${build[@]}" -f deploy/container/Containerfile --ignorefile deploy/container/Containerfile.dockerignore \
  --target runtime-base -t localhost/transcribe-check:runtime-base .
echo "== Containerfile.cuda --target runtime-base (on the Debian stand-in)"
"${build[@]}" -f deploy/container/Containerfile.cuda \
  --ignorefile deploy/container/Containerfile.cuda.dockerignore \
  --target runtime-base -t localhost/transcribe-check:cuda-runtime-base .

if $runtime; then
  echo "== Containerfile runtime stage with $bin_dir's binaries as the build stage's output"
  ctx="$work/runtime-ctx"
  rm -rf "$ctx" && mkdir -p "$ctx/out"
  for b in transcribe-server transcribe; do
    cp "$bin_dir/$b" "$ctx/out/"
  done
  {
    echo "FROM localhost/transcribe-check:runtime-base AS runtime-base"
    echo "FROM scratch AS build"
    echo "COPY out/ /out/"
    sed -n '/^FROM runtime-base AS runtime$/,$p' deploy/container/Containerfile
    # As the image's user, with its environment: the binary starts and finds its libraries.
    echo "FROM runtime AS check"
    echo "RUN id && /usr/local/bin/transcribe-server --help | tail -n 1"
  } > "$ctx/Containerfile"
  "${build[@]}" -f "$ctx/Containerfile" --target runtime -t localhost/transcribe-check:runtime "$ctx"
  "${build[@]}" -f "$ctx/Containerfile" --target check -t localhost/transcribe-check:check "$ctx"
  podman image inspect localhost/transcribe-check:runtime \
    --format 'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} env={{.Config.Env}} ports={{.Config.ExposedPorts}} stopsignal={{.Config.StopSignal}}'
  podman image inspect localhost/transcribe-check:runtime --format '{{.Size}}' |
    awk '{printf "image size: %.0f MB (the debootstrap minbase root stands in for bookworm-slim)\n", $1/1e6}'

  echo "== Containerfile.models on that image (a stand-in ggml file, not a real model)"
  mctx="$work/models-ctx"
  rm -rf "$mctx" && mkdir -p "$mctx"
  printf 'not a real model\n' > "$mctx/ggml-tiny.en.bin"
  "${build[@]}" -f deploy/container/Containerfile.models \
    --build-arg BASE=localhost/transcribe-check:runtime -t localhost/transcribe-check:models "$mctx"
  printf 'FROM localhost/transcribe-check:models\nRUN id -u && ls -ln /models\n' > "$mctx/Containerfile.check"
  "${build[@]}" -f "$mctx/Containerfile.check" -t localhost/transcribe-check:models-check "$mctx"
fi

if $build_deps; then
  echo "== Containerfile --target build-deps"
  "${build[@]}" -f deploy/container/Containerfile --ignorefile deploy/container/Containerfile.dockerignore \
    --target build-deps -t localhost/transcribe-check:build-deps .
  echo "== Containerfile.cuda --target build-deps (on the Debian stand-in)"
  "${build[@]}" -f deploy/container/Containerfile.cuda \
    --ignorefile deploy/container/Containerfile.cuda.dockerignore \
    --target build-deps -t localhost/transcribe-check:cuda-build-deps .
fi
if $runtime; then
  echo "container-check: ok"
else
  echo "container-check: ok (--no-runtime: the runtime stage and Containerfile.models were not built)"
fi
