#!/usr/bin/env bash
# Builds every src/*.c into <name>.wasm (WASI preview 1 command modules) next
# to this script, then the components:
#   hello-http.wasm     src/hello-http/hello-http.c as a wasi:http/proxy component
#   frontend.wasm       src/frontend/frontend.c, the same, calling its backend
#   job-component.wasm  job.wasm as a wasi:cli/run component
# Needs clang 16 with the wasm32-wasi sysroot:
#   apt-get install -y clang-16 lld-16 wasi-libc libclang-rt-16-dev-wasm32
# and, for the components, wasm-tools and wit-bindgen (skipped with a warning
# when missing) plus cargo to fetch the WIT and the preview-1 adapters:
#   cargo install --locked wasm-tools@1.263.0 wit-bindgen-cli@0.63.0
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
    printf '%-20s %8d bytes\n' "$out" "$(wc -c < "$out")"
done

# --- components -------------------------------------------------------------
# The WIT and the preview-1 adapters come from the crates of the wasmtime the
# node embeds, fetched by cargo into its registry.
WASMTIME_VERSION=48.0.8
for tool in wasm-tools wit-bindgen cargo; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "build.sh: $tool not found; components not rebuilt (cargo install --locked wasm-tools@1.263.0 wit-bindgen-cli@0.63.0)" >&2
        exit 0
    fi
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/fetch/src"
printf '%s\n' \
    '[package]' 'name = "fetch-wasi-artefacts"' 'version = "0.0.0"' 'edition = "2021"' \
    '[dependencies]' \
    "wasi-preview1-component-adapter-provider = \"=$WASMTIME_VERSION\"" \
    "wasmtime-wasi-http = { version = \"=$WASMTIME_VERSION\", default-features = false }" \
    > "$tmp/fetch/Cargo.toml"
: > "$tmp/fetch/src/lib.rs"
metadata="$(cargo metadata --quiet --format-version 1 --manifest-path "$tmp/fetch/Cargo.toml")"
# Where cargo keeps a package's sources.
crate_dir() {
    printf '%s' "$metadata" \
        | grep -o "\"manifest_path\":\"[^\"]*/$1-$WASMTIME_VERSION/Cargo.toml\"" \
        | head -n 1 | sed -e 's/^"manifest_path":"//' -e 's|/Cargo.toml"$||'
}
adapters="$(crate_dir wasi-preview1-component-adapter-provider)/artefacts"
http_wit="$(crate_dir wasmtime-wasi-http)/wit"
if [ ! -f "$adapters/wasi_snapshot_preview1.proxy.wasm" ] || [ ! -d "$http_wit/deps" ]; then
    echo "build.sh: could not find the adapters or the wasi:http WIT of wasmtime $WASMTIME_VERSION" >&2
    exit 1
fi

# component OUT COMMAND...: runs COMMAND with `-o` a temporary name, then moves it.
component() {
    out="$1"
    shift
    "$@" -o "$out.tmp"
    chmod 644 "$out.tmp"
    mv -f "$out.tmp" "$out"
    printf '%-20s %8d bytes\n' "$out" "$(wc -c < "$out")"
}

# http_component NAME: src/NAME/NAME.c with the bindings of the world NAME in
# src/NAME/NAME.wit, built as a reactor and adapted with the proxy adapter.
http_component() {
    name="$1"
    c_name="${name//-/_}"
    rm -rf "$tmp/wit" "$tmp/gen"
    mkdir -p "$tmp/wit/deps" "$tmp/gen"
    cp "$http_wit"/deps/*.wit "$tmp/wit/deps/"
    cp "src/$name/$name.wit" "$tmp/wit/world.wit"
    wit-bindgen c "$tmp/wit" --world "$name" --out-dir "$tmp/gen" >"$tmp/wit-bindgen.log" 2>&1 || { cat "$tmp/wit-bindgen.log" >&2; exit 1; }
    "$CC" "${CFLAGS[@]}" -mexec-model=reactor -I"$tmp/gen" -o "$tmp/$name.core.wasm" \
        "src/$name/$name.c" "$tmp/gen/$c_name.c" "$tmp/gen/${c_name}_component_type.o"
    component "$name.wasm" wasm-tools component new "$tmp/$name.core.wasm" \
        --adapt "wasi_snapshot_preview1=$adapters/wasi_snapshot_preview1.proxy.wasm"
}

http_component hello-http
http_component frontend
component job-component.wasm wasm-tools component new job.wasm \
    --adapt "wasi_snapshot_preview1=$adapters/wasi_snapshot_preview1.command.wasm"
