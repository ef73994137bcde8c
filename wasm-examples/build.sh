#!/usr/bin/env bash
# Builds every src/*.c into <name>.wasm (WASI preview 1 command modules) next
# to this script.  Needs clang 16 with the wasm32-wasi sysroot:
#   apt-get install -y clang-16 lld-16 wasi-libc libclang-rt-16-dev-wasm32
# Output is reproducible: the same toolchain gives the same bytes on every run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

CC="${CC:-clang-16}"
if ! command -v "$CC" >/dev/null 2>&1; then
    echo "build.sh: $CC not found; install the toolchain with:" >&2
    echo "  apt-get update && apt-get install -y clang-16 lld-16 wasi-libc libclang-rt-16-dev-wasm32" >&2
    exit 1
fi

# clang runs wasm-opt on -O builds when it finds one on PATH, which would make
# the output depend on binaryen's version.  The committed modules were built
# without it.
if command -v wasm-opt >/dev/null 2>&1; then
    echo "build.sh: warning: wasm-opt is on PATH; clang will post-process with it and the bytes may differ from the committed ones" >&2
fi

CFLAGS=(--target=wasm32-wasi -O2 -Wall -Wextra -Wl,--strip-all)

shopt -s nullglob
sources=(src/*.c)
if [ ${#sources[@]} -eq 0 ]; then
    echo "build.sh: no sources in $here/src" >&2
    exit 1
fi

for src in "${sources[@]}"; do
    name="$(basename "$src" .c)"
    out="$name.wasm"
    # Build to a temporary name, so a failed build never leaves a half file.
    "$CC" "${CFLAGS[@]}" -o "$out.tmp" "$src"
    chmod 644 "$out.tmp"
    mv -f "$out.tmp" "$out"
    printf '%-16s %8d bytes\n' "$out" "$(wc -c < "$out")"
done
