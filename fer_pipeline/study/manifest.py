"""Study manifest: which recording shows which respondent watching which stimulus, from when.

A manifest is a CSV (or YAML list of mappings) with one row per respondent and stimulus:

=============  ======================================================================================================
column         meaning
=============  ======================================================================================================
``recording``  file name or path of the recording, relative to the analysed FOLDER (or absolute)
``stimulus``   any id of the ad / trailer / product video, e.g. ``ad_A`` (letters, digits, ``. _ -``: it names a
               folder and a page)
``offset_s``   seconds into the recording at which the stimulus starts (>= 0)
``duration_s`` optional: stimulus length in seconds; empty = to the end of the shortest recording of that stimulus
``respondent`` optional: the respondent's id; default: the recording's file name without extension
any other      respondent attributes (age group, gender, market, survey answers), kept as text, used for segments
=============  ======================================================================================================

A recording may appear in several rows (one respondent watching several stimuli, each with its own offset). Bad rows
(missing recording, duplicate recording + stimulus, negative or non-numeric offset, bad stimulus id) are reported one
line each, naming the row, and left out; the valid rows still run. An offset beyond the recording's end is found once
the recording's duration is known (:func:`check_offsets`).

Without a manifest, :func:`folder_study` makes one from a folder of subfolders: one stimulus per subfolder (its
name), every recording in it a respondent, offset 0.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from fer_pipeline.inputs import VIDEO_EXTENSIONS, list_videos

REQUIRED = ("recording", "stimulus", "offset_s")
KNOWN = (*REQUIRED, "duration_s", "respondent")
#: Columns of the respondents table the pipeline fills: an attribute column may not take one of these names.
RESERVED = frozenset({"stimulus", "row", "video_id", "status", "error", "viewer_id", "seconds", "seconds_with_face",
                      "mean_valence", "mean_expressiveness", "mean_attention", "smiled", "peak_second",
                      "peak_valence", "baseline", "baseline_valence", "baseline_expressiveness", "path",
                      "attribute", "value", "second"})
STIMULUS_ID = re.compile(r"^[A-Za-z0-9._-]{1,80}$")


class ManifestError(ValueError):
    """The manifest as a whole cannot be used (unreadable, no rows, a required column missing)."""


@dataclass(frozen=True)
class ManifestRow:
    """One respondent watching one stimulus.

    Attributes:
        row: where it came from, for messages: the CSV line number (header = line 1) or the YAML item (1-based).
        recording: the ``recording`` cell as written.
        stimulus: stimulus id.
        offset_s: seconds into the recording at which the stimulus starts, >= 0.
        duration_s: stimulus length in seconds (> 0), or ``None`` (to the end of the shortest recording).
        respondent: respondent id (``respondent`` column, else the recording's stem).
        attributes: the further columns, as text (empty cells are ``""``), in manifest column order.
        path: the recording resolved against the folder, or ``None`` when no folder was given.
    """

    row: int
    recording: str
    stimulus: str
    offset_s: float
    duration_s: float | None
    respondent: str
    attributes: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


@dataclass
class Manifest:
    """Valid rows, one-line errors for the others, and the attribute column names (segments)."""

    rows: list[ManifestRow]
    errors: list[str]
    attributes: list[str]
    source: str

    @property
    def stimuli(self) -> list[str]:
        """Stimulus ids in order of first appearance."""
        return list(dict.fromkeys(r.stimulus for r in self.rows))

    def to_records(self) -> list[dict]:
        """The valid rows as plain dicts (manifest columns; JSON-ready), e.g. to pass to a flow."""
        return [{"row": r.row, "recording": r.recording, "stimulus": r.stimulus, "offset_s": r.offset_s,
                 "duration_s": r.duration_s, "respondent": r.respondent, **r.attributes,
                 "path": str(r.path) if r.path is not None else None} for r in self.rows]

    @classmethod
    def from_records(cls, records: list[dict], attributes: list[str], source: str = "") -> "Manifest":
        """Inverse of :meth:`to_records`."""
        rows = [ManifestRow(row=int(d["row"]), recording=d["recording"], stimulus=d["stimulus"],
                            offset_s=float(d["offset_s"]),
                            duration_s=None if d.get("duration_s") is None else float(d["duration_s"]),
                            respondent=d["respondent"], attributes={a: str(d.get(a, "")) for a in attributes},
                            path=Path(d["path"]) if d.get("path") else None) for d in records]
        return cls(rows, [], list(attributes), source)


def row_label(source: str | Path, row: int) -> str:
    """How messages name a manifest row: ``"study.csv line 4"`` (CSV line, header = 1) or ``"study.yaml item 3"``."""
    name = Path(str(source)).name or "manifest"
    word = "item" if Path(str(source)).suffix.lower() in (".yaml", ".yml") else "line"
    return f"{name} {word} {row}"


def _number(text, name: str) -> float | None:
    """``None`` for an empty cell; raise ValueError with a readable message for a non-number."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is not a number: {str(text)[:40]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} is not a finite number: {text!r}")
    return value


def _read_records(path: Path) -> tuple[list[tuple[int, dict]], list[str]]:
    """(row number, raw mapping) pairs and the column order."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read study manifest {path}: {e}") from e
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ManifestError(f"study manifest {path} is not valid YAML: {str(e).splitlines()[0]}") from e
        if isinstance(data, dict) and "respondents" in data:
            data = data["respondents"]
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise ManifestError(f"study manifest {path}: expected a list of mappings (one per respondent and "
                                "stimulus), or a mapping with a `respondents` list")
        columns = list(dict.fromkeys(k for d in data for k in d))
        return [(i + 1, {str(k): v for k, v in d.items()}) for i, d in enumerate(data)], [str(c) for c in columns]
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        raise ManifestError(f"study manifest {path} is empty")
    columns = [c.strip() for c in reader.fieldnames]
    records = []
    for i, raw in enumerate(reader):
        rec = {(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items() if k is not None}
        if not any(v not in (None, "") for v in rec.values()):
            continue  # blank line
        records.append((reader.line_num, rec))
    return records, columns


def load_manifest(path: str | Path, folder: str | Path | None = None) -> Manifest:
    """Read and check a study manifest (CSV, or YAML for ``.yaml``/``.yml``).

    Args:
        path: the manifest file.
        folder: the folder recordings are relative to; ``None``: recordings are not looked for on disk
            (``fer-pipeline study`` matches them to the analysed videos by name instead).

    Returns:
        A :class:`Manifest`; its ``errors`` hold one line per rejected row, e.g.
        ``"study.csv line 4: recording not found: r7.mp4"``.

    Raises:
        ManifestError: the file cannot be read or parsed, has no row, or lacks a required column.
    """
    path = Path(path)
    records, columns = _read_records(path)
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ManifestError(f"study manifest {path.name} lacks the column(s) {', '.join(missing)} (needs "
                            f"{', '.join(REQUIRED)}; optional duration_s, respondent, then any attributes)")
    if not records:
        raise ManifestError(f"study manifest {path.name} has no rows")
    attributes = [c for c in columns if c and c not in KNOWN]
    clash = [c for c in attributes if c in RESERVED]
    if clash:
        raise ManifestError(f"study manifest {path.name}: attribute column(s) {', '.join(clash)} would clash with "
                            "the respondents table's own columns; rename them (e.g. survey_status)")
    rows, errors, seen = [], [], {}
    base = Path(folder) if folder is not None else None
    for num, rec in records:
        try:
            rows.append(_row(num, rec, attributes, base, seen, path))
        except ValueError as e:
            errors.append(f"{row_label(path, num)}: {e}")
    return Manifest(rows, errors, attributes, str(path))


def _row(num: int, rec: dict, attributes: list[str], base: Path | None, seen: dict, source: Path) -> ManifestRow:
    recording = str(rec.get("recording") or "").strip()
    stimulus = str(rec.get("stimulus") or "").strip()
    if not recording:
        raise ValueError("recording is empty")
    if not stimulus:
        raise ValueError("stimulus is empty")
    if not STIMULUS_ID.match(stimulus):
        raise ValueError(f"stimulus id {stimulus[:40]!r} may only hold letters, digits, '.', '_' and '-'")
    offset = _number(rec.get("offset_s"), "offset_s")
    if offset is None:
        raise ValueError("offset_s is empty (0 when the stimulus starts with the recording)")
    if offset < 0:
        raise ValueError(f"offset_s is negative: {offset:g}")
    duration = _number(rec.get("duration_s"), "duration_s")
    if duration is not None and duration <= 0:
        raise ValueError(f"duration_s must be > 0: {duration:g}")
    resolved = None
    if base is not None:
        p = Path(recording).expanduser()
        resolved = p if p.is_absolute() else base / p
        if not resolved.is_file():
            raise ValueError(f"recording not found: {recording}")
    key = (str(resolved.resolve()) if resolved is not None else recording, stimulus)
    if key in seen:
        raise ValueError(f"duplicate row: {recording} with stimulus {stimulus} is already given ({seen[key]})")
    seen[key] = row_label(source, num).split(" ", 1)[1]
    respondent = str(rec.get("respondent") or "").strip() or Path(recording).stem
    attrs = {a: "" if rec.get(a) is None else str(rec.get(a)).strip() for a in attributes}
    return ManifestRow(num, recording, stimulus, float(offset), duration, respondent, attrs, resolved)


def check_offsets(manifest: Manifest, durations: dict[int, float | None]) -> Manifest:
    """Move rows whose offset is at or beyond their recording's end into ``errors``.

    Args:
        manifest: as loaded.
        durations: recording duration in seconds per manifest ``row`` number (``None``/NaN when unknown: kept).

    Returns:
        A new :class:`Manifest` (same attributes and source) without those rows.
    """
    keep, errors = [], list(manifest.errors)
    for r in manifest.rows:
        d = durations.get(r.row)
        if d is not None and math.isfinite(d) and r.offset_s >= d:
            errors.append(f"{row_label(manifest.source, r.row)}: offset_s {r.offset_s:g} is beyond the end of {r.recording} "
                          f"({d:.1f} s)")
        else:
            keep.append(r)
    return Manifest(keep, errors, manifest.attributes, manifest.source)


def folder_study(folder: str | Path) -> Manifest | None:
    """The study of a folder of subfolders: one stimulus per subfolder (its name made a valid id), every recording
    under it a respondent with offset 0.

    Returns:
        ``None`` when ``folder`` has recordings directly in it or no subfolder with recordings (not a study).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if any(p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS for p in folder.iterdir()):
        return None
    rows, n = [], 0
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        stimulus = re.sub(r"[^A-Za-z0-9._-]+", "_", sub.name).strip("_")[:80] or "stimulus"
        for video in list_videos([sub]):
            n += 1
            rel = Path(video).relative_to(folder) if Path(video).is_relative_to(folder) else Path(video)
            rows.append(ManifestRow(n, str(rel), stimulus, 0.0, None, Path(video).stem, {}, Path(video)))
    if not rows:
        return None
    return Manifest(rows, [], [], str(folder))


def study_for_run(paths: list[str | Path], study: str | Path | None) -> tuple[Manifest | None, list[str]]:
    """The study of an ``analyze`` run: the manifest ``study`` (recordings relative to the one folder in ``paths``,
    else to the manifest's own folder), or, without one, a single folder of subfolders (:func:`folder_study`).

    Returns:
        ``(manifest or None, errors)``: ``None`` when the run is no study; one line per rejected row.

    Raises:
        ManifestError: the manifest cannot be used at all (unreadable, no rows, a required column missing).
    """
    folders = [Path(p) for p in paths if Path(p).is_dir()]
    if study is not None:
        base = folders[0] if len(folders) == 1 else Path(study).parent
        manifest = load_manifest(study, base)
        return manifest, list(manifest.errors)
    if len(paths) == 1 and folders:
        return folder_study(folders[0]), []
    return None, []
