"""Export of the output tables for analysts who live in spreadsheets: CSV files or one Excel workbook.

Same tables and column names as the Parquet datasets (``video_id`` / ``stimulus`` as the first column); nothing is
recomputed. Excel (openpyxl) limits a sheet to 1,048,576 rows: a table longer than that (the ``faces`` table of hours
of video) is split over sheets ``faces``, ``faces (2)``, ... Face embeddings (biometric data) are never exported.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fer_pipeline.store import read_table
from fer_pipeline.study.store import STUDY_TABLES, read_study_table

VIDEO_TABLES = ("videos", "audience", "timeline", "faces")
EXCEL_MAX_ROWS = 1_048_575  # one row of the sheet holds the header


def _tables(out_dir: Path) -> dict[str, pd.DataFrame]:
    out: dict[str, pd.DataFrame] = {}
    for name in STUDY_TABLES:
        if (out_dir / name).is_dir():
            out[name] = read_study_table(out_dir, name)
    for name in VIDEO_TABLES:
        if (out_dir / name).is_dir():
            out[name] = read_table(out_dir, name)
    return out


def _excel_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Excel has no time zones: timestamps are written as UTC without one."""
    df = df.copy()
    for c in df.columns:
        if isinstance(df[c].dtype, pd.DatetimeTZDtype):
            df[c] = df[c].dt.tz_convert("UTC").dt.tz_localize(None)
    return df


def export_tables(out_dir: str | Path, fmt: str, to_dir: str | Path) -> list[Path]:
    """Write every table of an output folder as ``<table>.csv`` files or one ``fer-pipeline.xlsx`` workbook.

    Args:
        out_dir: an output folder of ``fer-pipeline analyze`` (study tables included when present).
        fmt: ``"csv"`` or ``"xlsx"``.
        to_dir: destination folder (created).

    Returns:
        The files written (study tables first, then videos, audience, timeline, faces).

    Raises:
        ValueError: unknown ``fmt``, or the folder holds no table.
        DamagedOutputError: a Parquet part cannot be read.
        OSError: the destination cannot be written.
    """
    if fmt not in ("csv", "xlsx"):
        raise ValueError(f"unknown export format {fmt!r}; expected csv or xlsx")
    out_dir, to_dir = Path(out_dir), Path(to_dir)
    tables = _tables(out_dir)
    if not tables:
        raise ValueError(f"no tables in {out_dir}")
    to_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        paths = []
        for name, df in tables.items():
            p = to_dir / f"{name}.csv"
            df.to_csv(p, index=False)
            paths.append(p)
        return paths
    path = to_dir / "fer-pipeline.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as xl:
        for name, df in tables.items():
            df = _excel_safe(df)
            for i, start in enumerate(range(0, max(len(df), 1), EXCEL_MAX_ROWS)):
                sheet = name if i == 0 else f"{name} ({i + 1})"
                df.iloc[start:start + EXCEL_MAX_ROWS].to_excel(xl, sheet_name=sheet[:31], index=False)
    return [path]
