#!/usr/bin/env bash
# Checks deploy/container/Containerfile and Containerfile.cuda as far as a machine can that
# cannot pull base images and should not compile (docs/DEPLOY.md "What was run").
#
#   tests/deploy/container-check.sh [--build-deps]
#
# 1. Makes a Debian 12 root with debootstrap (minbase) and imports it into podman under the
#    names the Containerfiles use: debian:bookworm-slim, and stand-ins for
#    rust:RUST-bookworm and nvidia/cuda:CUDA-{devel,runtime}-ubuntu24.04 (Debian without Rust
#    or CUDA, with empty /usr/local/cargo and /usr/local/rustup so that COPY --from works).
# 2. Builds the real `runtime-base` stage of both files (apt-get of the runtime libraries,
#    the user, /models). The CUDA one runs on the Debian stand-in, where its
#    `libasound2t64 || libasound2` falls back to libasound2.
# 3. Runs the real `runtime` stage of the CPU Containerfile (its ldd check, `--version`, ENV,
#    USER, ENTRYPOINT) with the binaries already in target/release standing in for the
#    `build` stage's output, prints what the image says about itself, and runs
#    `transcribe-server --help` in it as the image's user.
# 4. Builds deploy/container/Containerfile.models on top of that image with a stand-in
#    ggml file and lists /models as the image's user.
# 5. With --build-deps: builds the real `build-deps` stages too (apt-get of cmake, clang,
#    libclang-dev, g++, the ALSA headers: some hundreds of MB from Debian's mirror). The
#    `build` stages (cargo build) are never run here.
#
# Needs root, podman, debootstrap and Debian's package mirror. Containers are built with
# --isolation=chroot (this machine's cgroup setup refuses crun); nothing is `podman run`.
set -euo pipefail
cd "$(dirname "$0")/../.."

build_deps=false
[ "${1:-}" = "--build-deps" ] && build_deps=true

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

echo "== Containerfile runtime stage with target/release's binaries as the build stage's output"
ctx="$work/runtime-ctx"
rm -rf "$ctx" && mkdir -p "$ctx/out"
for b in transcribe-server transcribe; do
  [ -x "target/release/$b" ] || { echo "target/release/$b missing: build it first" >&2; exit 1; }
  cp "target/release/$b" "$ctx/out/"
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

if $build_deps; then
  echo "== Containerfile --target build-deps"
  "${build[@]}" -f deploy/container/Containerfile --ignorefile deploy/container/Containerfile.dockerignore \
    --target build-deps -t localhost/transcribe-check:build-deps .
  echo "== Containerfile.cuda --target build-deps (on the Debian stand-in)"
  "${build[@]}" -f deploy/container/Containerfile.cuda \
    --ignorefile deploy/container/Containerfile.cuda.dockerignore \
    --target build-deps -t localhost/transcribe-check:cuda-build-deps .
fi
echo "container-check: ok"
