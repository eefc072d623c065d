"""Are two output folders the same? Tables cell for cell, Parquet schemas, and reports with their timestamps masked.

For refactors that must not change behaviour: analyse the same recordings before and after, then compare::

    git stash; .venv/bin/fer-pipeline analyze ../shared/data/videos --out /tmp/before; git stash pop
    .venv/bin/fer-pipeline analyze ../shared/data/videos --out /tmp/after
    .venv/bin/python scripts/compare_outputs.py /tmp/before /tmp/after

Compared: every table's rows (all columns but ``videos.processing_s`` and ``videos.created_at``, which differ on
every run), exactly (floats bit for bit), sorted by their keys; each part file's Arrow schema (names and types);
each report and the index as text, with the "generated ... UTC" stamp and per-run figures (processing seconds, x real
time) masked; the report thumbnails byte for byte. Exit code 0 when all is equal, 1 otherwise (the differences are printed).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

TABLES = ("faces", "timeline", "audience", "videos")
VOLATILE = {"videos": ["processing_s", "created_at"]}
KEYS = ("video_id", "track_id", "frame_index", "second")
# per-run text in reports: the generation stamp, processing time and speed
MASKS = [re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? UTC"), re.compile(r"processing[^<]{0,40}?\d+(\.\d+)?\s*s"),
         re.compile(r"\d+(\.\d+)? s \(\d+(\.\d+)?× real time\)")]


def _table(out: Path, table: str) -> pd.DataFrame:
    files = sorted((out / table).glob("video_id=*/*.parquet"))
    frames = []
    for f in files:
        df = pq.read_table(f, partitioning=None).to_pandas()
        df["video_id"] = f.parent.name.partition("=")[2]
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True).drop(columns=VOLATILE.get(table, []), errors="ignore")
    keys = [k for k in KEYS if k in df.columns]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def _schemas(out: Path, table: str) -> dict[str, str]:
    return {f.parent.name: str(pq.read_schema(f).remove_metadata())
            for f in sorted((out / table).glob("video_id=*/*.parquet"))}


def _masked(text: str) -> str:
    for m in MASKS:
        text = m.sub("<masked>", text)
    return text


def compare(a: Path, b: Path) -> list[str]:
    """The differences between output folders ``a`` and ``b`` (empty: equal)."""
    diffs = []
    for table in TABLES:
        ta, tb = _table(a, table), _table(b, table)
        if list(ta.columns) != list(tb.columns):
            diffs.append(f"{table}: columns {list(ta.columns)} != {list(tb.columns)}")
            continue
        try:
            pd.testing.assert_frame_equal(ta, tb, check_exact=True)
        except AssertionError as e:
            diffs.append(f"{table}: {' '.join(str(e).split())[:400]}")
        if _schemas(a, table) != _schemas(b, table):
            diffs.append(f"{table}: Parquet schemas differ")
    pages_a = sorted(p.relative_to(a) for p in [*a.glob("reports/*.html"), a / "index.html"] if p.is_file())
    pages_b = sorted(p.relative_to(b) for p in [*b.glob("reports/*.html"), b / "index.html"] if p.is_file())
    if pages_a != pages_b:
        diffs.append(f"reports: {pages_a} != {pages_b}")
    for rel in set(pages_a) & set(pages_b):
        if _masked((a / rel).read_text(encoding="utf-8")) != _masked((b / rel).read_text(encoding="utf-8")):
            diffs.append(f"{rel}: differs")
    thumbs_a = {p.relative_to(a): p.read_bytes() for p in sorted(a.glob("reports/thumbs/*/*.jpg"))}
    thumbs_b = {p.relative_to(b): p.read_bytes() for p in sorted(b.glob("reports/thumbs/*/*.jpg"))}
    if set(thumbs_a) != set(thumbs_b):
        diffs.append(f"thumbnails: {sorted(map(str, set(thumbs_a) ^ set(thumbs_b)))} in only one of them")
    diffs += [f"{rel}: differs" for rel in sorted(set(thumbs_a) & set(thumbs_b)) if thumbs_a[rel] != thumbs_b[rel]]
    return diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="an output folder")
    ap.add_argument("b", type=Path, help="another output folder")
    args = ap.parse_args()
    diffs = compare(args.a, args.b)
    for d in diffs:
        print(d)
    n = {t: len(_table(args.a, t)) for t in TABLES}
    print("equal" if not diffs else f"{len(diffs)} difference(s)", f"(rows: {n})")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
