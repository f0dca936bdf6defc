#!/usr/bin/env bash
# Builds llama.cpp's llama-bench from the sources vendored in the llama-cpp-python source
# distribution of the version installed here, so that the reference runs the same
# llama.cpp our binding uses. Usage: benchmarks/build_llama_bench.sh [OUT_DIR]
# Also builds turns_shim.c beside it (libedgebench-turns.so: reference.py --turns).
# Prints the path of the built binary on its last line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/.data/llama-bench}"
python="${PYTHON:-$here/../.venv/bin/python}"
version="$("$python" -c 'import llama_cpp; print(llama_cpp.__version__)')"
mkdir -p "$out"
binary="$out/build/bin/llama-bench"
shim="$out/build/bin/libedgebench-turns.so"
build_shim() {
  if [ ! -f "$shim" ] || [ "$here/turns_shim.c" -nt "$shim" ]; then
    "${CC:-cc}" -O2 -shared -fPIC -o "$shim" "$here/turns_shim.c" -ldl
  fi
}
if [ -x "$binary" ] && [ "$(cat "$out/version" 2>/dev/null)" = "$version" ]; then
  build_shim; echo "$binary"; exit 0
fi
src="$out/src"
rm -rf "$src" && mkdir -p "$src"
"$python" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$src"
tar xzf "$src"/llama_cpp_python-*.tar.gz -C "$src"
vendor="$(echo "$src"/llama_cpp_python-*/vendor/llama.cpp)"
cmake -S "$vendor" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$out/build" --target llama-bench -j"$(nproc)" >/dev/null
build_shim
echo "$version" > "$out/version"
echo "$binary"
