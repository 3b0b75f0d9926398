#!/usr/bin/env python3
"""Parquet fixtures for the calibration reader (formats/src/parquet.rs): files as pyarrow (what
the Hugging Face hub's datasets use) writes them, with a `text` column, in snappy and zstd, and
one in gzip (a codec we refuse by name).

    ~/.cache/autoround-cpu/ref-venv/bin/python tools/parquet_fixture.py tests/fixtures
"""
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

out = Path(sys.argv[1])
texts = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    None,
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition.",
    "Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who never took up any book but the Baronetage.",
]
t = pa.table({"id": list(range(len(texts))), "text": texts})
# two row groups, to read across them
pq.write_table(t, out / "calib-snappy.parquet", compression="snappy", row_group_size=2)
pq.write_table(t, out / "calib-zstd.parquet", compression="zstd")
pq.write_table(t, out / "calib-gzip.parquet", compression="gzip")
