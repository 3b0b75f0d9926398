#!/usr/bin/env python3
"""Calibration and evaluation text for users' machines, from a package as the model is: Jane
Austen's novels (Project Gutenberg text) in Debian's `r-cran-janeaustenr` package, read from its
R lazy-load database with the standard library only (no R).

    tools/fetch_calib.py DEB_OR_RDB OUT_DIR

writes OUT_DIR/calib.txt (Northanger Abbey, paragraphs up to the first 300,000 bytes) and
OUT_DIR/eval.txt (Persuasion, whole): paragraphs joined into lines, separated by a blank line,
UTF-8. These are the very files of ../shared/data (its README tells how they were made), so
results on either agree. tools/fetch-calib.sh downloads the package and calls this.
"""
import io
import struct
import sys
import tarfile
import zlib
from pathlib import Path

RDB = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"


def rdb_bytes(path: Path) -> bytes:
    if path.suffix != ".deb":
        return path.read_bytes()
    # a .deb is an `ar` archive holding data.tar.{xz,zst,gz}
    b = path.read_bytes()
    if b[:8] != b"!<arch>\n":
        sys.exit(f"{path}: not a .deb (ar) archive")
    off = 8
    while off + 60 <= len(b):
        name = b[off:off + 16].decode().strip().rstrip("/")
        size = int(b[off + 48:off + 58].decode().strip())
        body = b[off + 60:off + 60 + size]
        off += 60 + size + (size & 1)
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                sys.exit(f"{path}: zstd-compressed data; extract it with `dpkg-deb -x` and pass {RDB}")
            with tarfile.open(fileobj=io.BytesIO(body)) as t:
                for m in t.getmembers():
                    if m.name.lstrip("./") == RDB:
                        return t.extractfile(m).read()
    sys.exit(f"{path}: no {RDB} inside")


def books(rdb: bytes):
    """The character vectors of the database: one per novel, one element per line."""
    off = 0
    while off < len(rdb):
        d = zlib.decompressobj()
        out = d.decompress(rdb[off + 4:])
        off = len(rdb) - len(d.unused_data)
        if out[:2] != b"X\n":
            sys.exit("unexpected R serialization (not XDR)")
        p = 14  # format, version, writer and minimal reader versions
        (nl,) = struct.unpack(">I", out[p:p + 4])
        p += 4 + nl  # native encoding name
        flags, n = struct.unpack(">II", out[p:p + 8])
        p += 8
        if flags & 0xFF != 16:
            sys.exit("unexpected R object (not a character vector)")
        lines = []
        for _ in range(n):
            _, ln = struct.unpack(">Ii", out[p:p + 8])
            p += 8
            if ln < 0:
                lines.append("")
                continue
            lines.append(out[p:p + ln].decode("utf-8"))
            p += ln
        yield lines


def paragraphs(lines):
    out, cur = [], []
    for line in lines:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            out.append(" ".join(cur))
            cur = []
    if cur:
        out.append(" ".join(cur))
    return out


def main():
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    by_title = {}
    for lines in books(rdb_bytes(src)):
        by_title[lines[0].strip().upper()] = paragraphs(lines)
    north, pers = by_title["NORTHANGER ABBEY"], by_title["PERSUASION"]
    calib, size = [], 0
    for p in north:
        calib.append(p)
        size += len(p.encode()) + 2
        if size >= 300000:
            break
    dst.mkdir(parents=True, exist_ok=True)
    for name, ps in (("calib.txt", calib), ("eval.txt", pers)):
        tmp = dst / (name + ".tmp")
        tmp.write_text("\n\n".join(ps) + "\n", encoding="utf-8")
        tmp.replace(dst / name)
        print(dst / name)


if __name__ == "__main__":
    main()
