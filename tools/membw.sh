#!/usr/bin/env bash
# Builds tools/membw.c (gcc, AVX2) into a cache folder and measures read bandwidth with each
# thread count: the memory-bandwidth limit that decode speed is compared to.
# Usage: tools/membw.sh [THREADS...]   (default: 1 2)   Env: MIB (2048), REPS (7)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin="${XDG_CACHE_HOME:-$HOME/.cache}/autoround-cpu/membw"
mkdir -p "$(dirname "$bin")"
if [ ! -x "$bin" ] || [ "$here/membw.c" -nt "$bin" ]; then
  gcc -O2 -mavx2 -pthread -o "$bin.tmp" "$here/membw.c" && mv "$bin.tmp" "$bin"
fi
for t in "${@:-1 2}"; do
  for x in $t; do "$bin" "$x" "${MIB:-2048}" "${REPS:-7}"; done
done
