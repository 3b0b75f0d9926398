#!/usr/bin/env bash
# Fetch calibration and evaluation text into the data cache, idempotently: Jane Austen's
# Northanger Abbey (calib.txt) and Persuasion (eval.txt), public-domain text from Debian's
# `r-cran-janeaustenr` package (`apt-get download`, no root needed; or the Debian archive
# directly where apt is missing), extracted by tools/fetch_calib.py. The files are byte-identical
# to ../shared/data's.
#
# Usage:  tools/fetch-calib.sh          # prints the path of calib.txt on the last stdout line
# Env:    AUTOROUND_DATA   cache folder (default ~/.cache/autoround-cpu/data)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DIR="${AUTOROUND_DATA:-$HOME/.cache/autoround-cpu/data}"
mkdir -p "$DIR"
if [ -s "$DIR/calib.txt" ] && [ -s "$DIR/eval.txt" ]; then
  echo "[fetch-calib] already present: $DIR/calib.txt" >&2
  echo "$DIR/calib.txt"
  exit 0
fi
tmp=$(mktemp -d "$DIR/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
PKG=r-cran-janeaustenr
URL="https://deb.debian.org/debian/pool/main/r/$PKG/${PKG}_1.0.0-1_all.deb"
if command -v apt-get >/dev/null && (cd "$tmp" && apt-get download "$PKG" >/dev/null 2>&1); then
  echo "[fetch-calib] apt-get download $PKG" >&2
else
  echo "[fetch-calib] $URL" >&2
  curl -fsSL -o "$tmp/${PKG}_1.0.0-1_all.deb" "$URL"
fi
deb=$(ls "$tmp"/*.deb | head -n1)
"${PYTHON:-python3}" "$here/fetch_calib.py" "$deb" "$DIR" >&2
echo "$DIR/calib.txt"
