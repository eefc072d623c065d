"""Template contexts: what a report page shows, built from a video's tables and :mod:`fer_pipeline.metrics`.

:func:`video_context` builds the context of ``video.html.j2`` (one video) and :func:`index_context` that of
``index.html.j2`` (the run); a study page (several videos compared) would get its own builder here. The figures come
from :mod:`fer_pipeline.metrics` (summaries) and :mod:`fer_pipeline.aggregate` (per-second columns); this module
only selects, rounds and labels them for the templates. Labels are never hard-coded: they are read from the
``p_<label>`` columns, in column order (FER2013 order for the shipped model).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_pipeline import metrics
from fer_pipeline.aggregate import PROB_PREFIX, SHARE_PREFIX, dominant_emotion
from fer_pipeline.report.html import (
    PLOTLY_JS_NAME,
    format_when,
    json_for_script,
    relative_ref,
)

logger = logging.getLogger(__name__)

MAX_VIEWER_ROWS = 200
"""At most this many viewers are listed in the per-viewer table of a report (the heatmap shows all)."""
MAX_FRAMES = 24
"""At most this many frames are shown in the gallery under the key moments."""

# Colours only (not the label list): known labels get a stable, meaningful colour, others a fallback palette.
_LABEL_COLORS = {
    "angry": "#d1495b",
    "disgust": "#7a8b3a",
    "fear": "#8e6cc2",
    "happy": "#f0a202",
    "sad": "#3f7cc0",
    "surprise": "#1fa39a",
    "neutral": "#b4bcc8",
    "contempt": "#c56aa6",
}
_FALLBACK_COLORS = ("#e377c2", "#8c564b", "#bcbd22", "#17becf", "#7f7f7f", "#ff7f0e", "#2ca02c", "#9467bd")

_STATUS_ORDER = {"ok": 0, "failed": 1, "skipped": 2}


def label_colors(labels: Iterable[str]) -> dict[str, str]:
    """A CSS hex colour per label: fixed for the known emotions, from a fallback palette for any other label."""
    out: dict[str, str] = {}
    k = 0
    for label in labels:
        if label in _LABEL_COLORS:
            out[label] = _LABEL_COLORS[label]
        else:
            out[label] = _FALLBACK_COLORS[k % len(_FALLBACK_COLORS)]
            k += 1
    return out


def contiguous_ranges(seconds: Iterable[int]) -> list[tuple[int, int]]:
    """Merge integer seconds into half-open ranges: ``[3, 4, 5, 9] -> [(3, 6), (9, 10)]``."""
    out: list[tuple[int, int]] = []
    for s in sorted({int(x) for x in seconds}):
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], s + 1)
        else:
            out.append((s, s + 1))
    return out


def _now() -> str:
    """The "generated" stamp of a page: local time with its zone name."""
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip()


def _clean(value: Any) -> Any:
    """A value from a DataFrame row as plain Python: NaN/NA/NaT -> None, numpy scalars -> Python."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _first_line(text: Any, limit: int = 300) -> str:
    """The first non-empty line of an error message, at most ``limit`` characters."""
    if text is None:
        return ""
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def _model_card_summary(card: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Name, labels, test accuracy / macro-F1 and sha256 from a model card, whatever its exact nesting."""
    if not card:
        return None

    def dig(*paths: tuple[str, ...]) -> Any:
        for p in paths:
            node: Any = card
            for key in p:
                if not isinstance(node, Mapping) or key not in node:
                    node = None
                    break
                node = node[key]
            if node is not None:
                return node
        return None

    labels = dig(("labels",), ("spec", "labels"), ("model_spec", "labels"))
    return {
        "name": dig(("name",), ("model",), ("model_name",), ("file",)),
        "labels": [str(x) for x in labels] if isinstance(labels, (list, tuple)) else None,
        "test_accuracy": dig(("onnx_metrics", "test", "accuracy"), ("metrics", "test", "accuracy"),
                             ("test", "accuracy"), ("test_accuracy",),
                             ("metrics", "test_accuracy")),
        "test_macro_f1": dig(("onnx_metrics", "test", "macro_f1"), ("metrics", "test", "macro_f1"),
                             ("test", "macro_f1"), ("test_macro_f1",)),
        "dataset": dig(("dataset",), ("training", "dataset"), ("data", "dataset"), ("config", "data", "dataset")),
        "sha256": dig(("sha256",), ("onnx_sha256",)),
    }


def _chart_data(timeline: pd.DataFrame, audience: pd.DataFrame, head: dict[str, Any],
                duration_s: float | None, viewer_thumbs: Mapping[int, str] | None = None) -> dict[str, Any]:
    """Everything the charts need, as plain lists (rounded to 4 decimals to keep the HTML small).

    The heatmap has one row per viewer (``viewer_id``, all of that person's tracks; see
    :func:`fer_pipeline.metrics.viewer_seconds`), ordered by first appearance: ``viewers`` (row labels),
    ``ids`` (viewer ids), ``z`` (label index of the dominant emotion per second, ``None`` when not seen), ``p`` (its
    probability) and ``thumbs``. ``viewer_thumbs`` maps ``viewer_id`` to a relative thumbnail path, shown beside the
    heatmap's rows."""
    labels = head["labels"]
    colors = label_colors(labels)
    last = int(audience["second"].max()) if not audience.empty else -1
    if not timeline.empty:
        last = max(last, int(timeline["second"].max()))
    if duration_s is not None and math.isfinite(duration_s) and duration_s > 0:
        last = max(last, math.ceil(duration_s) - 1)
    seconds = list(range(last + 1))
    au = audience.set_index("second").reindex(seconds) if not audience.empty else pd.DataFrame(index=seconds)

    def col(name: str, digits: int = 4) -> list[float | None]:
        if name not in au.columns:
            return [None] * len(seconds)
        return [None if pd.isna(v) else round(float(v), digits) for v in au[name]]

    share_kind = "share" if all(SHARE_PREFIX + x in au.columns for x in labels) else "p"
    prefix = SHARE_PREFIX if share_kind == "share" else PROB_PREFIX
    viewers = [0 if v is None else int(v) for v in col("viewers")]
    thr = head["low_confidence_threshold"]
    low = [0 < v < thr for v in viewers]

    heat: dict[str, Any] = {"viewers": [], "ids": [], "z": [], "p": [], "thumbs": []}
    if not timeline.empty and labels and "track_id" in timeline.columns:
        tl = metrics.viewer_seconds(timeline)
        vcol = metrics.VIEWER_ID
        order = [int(v) for v in tl.groupby(vcol)["second"].min().reset_index()
                 .sort_values(["second", vcol], kind="stable")[vcol]]
        label_index = {x: i for i, x in enumerate(labels)}
        pos = {s: i for i, s in enumerate(seconds)}
        probs = tl[[PROB_PREFIX + x for x in labels]].to_numpy(float)
        emo = tl["emotion"].astype(object).to_numpy() if "emotion" in tl.columns else dominant_emotion(probs, labels)
        z: dict[int, list[int | None]] = {v: [None] * len(seconds) for v in order}
        p: dict[int, list[float | None]] = {v: [None] * len(seconds) for v in order}
        for i, (v, s, e) in enumerate(zip(tl[vcol].to_numpy(), tl["second"].to_numpy(), emo)):
            j = pos.get(int(s))
            if j is None or e not in label_index:
                continue
            k = label_index[e]
            z[int(v)][j] = k
            p[int(v)][j] = None if math.isnan(probs[i, k]) else round(float(probs[i, k]), 3)
        heat = {"viewers": [f"Viewer {v}" for v in order], "ids": order, "z": [z[v] for v in order],
                "p": [p[v] for v in order], "thumbs": [(viewer_thumbs or {}).get(v) for v in order]}

    return {
        "labels": labels,
        "colors": [colors[x] for x in labels],
        "seconds": seconds,
        "viewers": viewers,
        "low": low,
        "lowRanges": [list(r) for r in contiguous_ranges(s for s, f in zip(seconds, low) if f)],
        "noViewerRanges": [list(r) for r in contiguous_ranges(s for s, v in zip(seconds, viewers) if v == 0)],
        "lowThreshold": thr,
        "shareKind": share_kind,
        "share": [col(prefix + x) for x in labels],
        "valence": col("valence"),
        "expressiveness": col("expressiveness"),
        "attention": col("attention"),
        "hasAttention": "attention" in au.columns and bool(au["attention"].notna().any()),
        "heatmap": heat,
        "mix": [round(head["emotion_mix"].get(x, float("nan")), 4) if x in head["emotion_mix"] else None
                for x in labels],
        "peak": head["peak"],
        "trough": head["trough"],
        "hookSeconds": head["hook"]["seconds"],
    }


def _thumbnail_refs(thumbnails: Mapping[str, Any] | None
                    ) -> tuple[dict[str, str], dict[str, str], dict[int, str]]:
    """``({str(viewer_id): ref}, {str(track_id): ref}, {second: ref})`` from ``{"viewers": ..., "tracks": ...,
    "moments": ...}``, relative refs only."""
    thumbs = thumbnails or {}
    viewer_thumbs = {str(k): r for k, v in (thumbs.get("viewers") or {}).items() if (r := relative_ref(v))}
    track_thumbs = {str(k): r for k, v in (thumbs.get("tracks") or {}).items() if (r := relative_ref(v))}
    moment_thumbs: dict[int, str] = {}
    for k, v in (thumbs.get("moments") or {}).items():
        r = relative_ref(v)
        try:
            if r:
                moment_thumbs[int(float(k))] = r
        except (TypeError, ValueError):
            logger.warning("ignoring moment thumbnail with non-numeric second %r", k)
    dropped = (sum(len(thumbs.get(k) or {}) for k in ("viewers", "tracks", "moments"))
               - len(viewer_thumbs) - len(track_thumbs) - len(moment_thumbs))
    if dropped:
        logger.warning("ignored %d thumbnail(s) that were not relative paths", dropped)
    return viewer_thumbs, track_thumbs, moment_thumbs


def _viewer_thumbs(timeline: pd.DataFrame, viewer_thumbs: Mapping[str, str],
                   track_thumbs: Mapping[str, str]) -> dict[int, str]:
    """``{viewer_id: ref}``: the viewer's own thumbnail (``viewer-<id>.jpg``), else that of the first of its tracks
    that has one (``track-<id>.jpg``: output folders written before re-identification, where each track is its own
    viewer)."""
    out: dict[int, str] = {}
    for vid, tracks in metrics.viewer_tracks(timeline).items():
        ref = viewer_thumbs.get(str(vid)) or next((track_thumbs[str(t)] for t in tracks if str(t) in track_thumbs),
                                                  None)
        if ref:
            out[vid] = ref
    return out


def _explain_refs(thumbnails: Mapping[str, Any] | None) -> dict[int, list[dict[str, Any]]]:
    """``{second: [{"viewer_id", "ref", "label", "p", "regions"}, ...]}`` of the key-moment occlusion maps
    (``report.explain``), relative refs only, viewers in order."""
    out: dict[int, list[dict[str, Any]]] = {}
    for k, entries in ((thumbnails or {}).get("explain") or {}).items():
        try:
            sec = int(float(k))
        except (TypeError, ValueError):
            continue
        kept = [{**e, "ref": r} for e in entries or () if (r := relative_ref(e.get("ref")))]
        if kept:
            out[sec] = sorted(kept, key=lambda e: e.get("viewer_id", 0))
    return out


def _moments(km: Mapping[str, Any], moment_thumbs: Mapping[int, str],
             explained: Mapping[int, list[dict[str, Any]]] | None = None) -> list[dict[str, Any]]:
    """The report's "Key moments" cards from :func:`fer_pipeline.metrics.key_moments`, each with its frame and,
    where ``report.explain`` made them, its faces' occlusion maps (``explain``)."""
    explained = explained or {}
    moments = []
    for key, title in (("peak", "Highest valence"), ("trough", "Lowest valence")):
        m = km[key]
        if m is not None:
            moments.append({"title": title, "second": m["second"], "value": m["value"], "viewers": m["viewers"],
                            "thumb": moment_thumbs.get(m["second"]), "explain": explained.get(m["second"], [])})
    lp = km["label_peak"]
    if lp is not None:
        moments.append({"title": f"Peak {lp['label']}", "second": lp["second"], "value": None,
                        "p": lp["value"], "viewers": None, "thumb": moment_thumbs.get(lp["second"]),
                        "explain": explained.get(lp["second"], [])})
    return moments


def video_context(video: Mapping[str, Any], timeline: pd.DataFrame | None, audience: pd.DataFrame | None,
                  model_card: Mapping[str, Any] | None = None, thumbnails: Mapping[str, Any] | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Template context of one video's report (``video.html.j2``), and its headline figures.

    Args:
        video: one row of the ``videos`` table as a dict; missing keys are shown as "—".
        timeline: the video's ``timeline`` rows (may be ``None`` or empty).
        audience: the video's ``audience`` rows (may be ``None`` or empty: rebuilt from ``timeline``).
        model_card: the emotion model's card, summarised when given.
        thumbnails: ``{"viewers": {viewer_id: ref}, "tracks": {track_id: ref}, "moments": {second: ref}}``; a
            viewer without its own thumbnail shows that of one of its tracks (output folders written before
            re-identification have track thumbnails only); refs that are not relative paths are ignored (logged).

    Returns:
        ``(context, headline)``: ``context`` has every variable of ``video.html.j2`` (``chart_json`` is escaped
        JSON, to be inserted unescaped: see :func:`fer_pipeline.report.html.render_template`); ``headline`` is
        :func:`fer_pipeline.metrics.headline_figures` (for the index).

    Raises:
        TypeError: a value of the tables cannot be serialised to JSON.
    """
    video = {k: _clean(v) for k, v in dict(video).items()}
    duration = video.get("duration_s")
    duration = float(duration) if isinstance(duration, (int, float)) else None
    # tables written before re-identification have neither: each track is then its own viewer
    reidentified = video.get("viewers") is not None or (
        timeline is not None and metrics.VIEWER_ID in timeline.columns
        and bool(timeline[metrics.VIEWER_ID].notna().any()))
    timeline, audience = metrics.prepare_tables(timeline, audience, duration)
    head = metrics.headline_figures(timeline, audience, duration_s=duration, viewers=video.get("viewers"))
    viewer_refs, track_refs, moment_thumbs = _thumbnail_refs(thumbnails)
    thumbs = _viewer_thumbs(timeline, viewer_refs, track_refs)

    viewers = metrics.viewer_summary(timeline)
    viewer_rows = []
    for row in viewers.head(MAX_VIEWER_ROWS).itertuples(index=False):
        vid = _clean(row.viewer_id)
        viewer_rows.append({
            "viewer_id": vid, "tracks": _clean(row.tracks),
            "first": _clean(row.first_second), "last": _clean(row.last_second),
            "seconds": _clean(row.seconds), "valence": _clean(row.valence),
            "expressiveness": _clean(row.expressiveness), "attention": _clean(row.attention),
            "smiled": bool(row.smiled),
            "emotion": _clean(row.emotion), "thumb": thumbs.get(vid) if vid is not None else None,
        })

    moments = _moments(metrics.key_moments(audience), moment_thumbs, _explain_refs(thumbnails))
    used = {m["second"] for m in moments}
    frames = [{"second": s, "thumb": r} for s, r in sorted(moment_thumbs.items()) if s not in used][:MAX_FRAMES]

    path = video.get("path") or ""
    name = Path(str(path)).name or str(video.get("video_id", ""))
    proc = video.get("processing_s")
    speed = (duration / proc) if (duration and proc and proc > 0) else None
    colors = label_colors(head["labels"])
    ctx = {
        "title": name,
        "video": video,
        "speed": speed,
        "head": head,
        "labels": head["labels"],
        "colors": colors,
        "mix_rows": [{"label": x, "value": head["emotion_mix"].get(x), "color": colors[x]} for x in head["labels"]],
        "moments": moments,
        "frames": frames,
        "viewers": viewer_rows,
        "viewers_total": len(viewers),
        "reidentified": reidentified,
        "has_data": not audience.empty,
        "card": _model_card_summary(model_card),
        "chart_json": json_for_script(_chart_data(timeline, audience, head, duration, thumbs)),
        "plotly_src": PLOTLY_JS_NAME,
        "generated": _now(),
        "hook_s": metrics.HOOK_S,
        "end_s": metrics.END_S,
        "low_share": metrics.LOW_CONFIDENCE_SHARE,
    }
    return ctx, head


def index_context(videos: pd.DataFrame, reports: Mapping[str, str],
                  headlines: Mapping[str, Mapping[str, Any]] | None = None,
                  report_errors: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Template context of the run index (``index.html.j2``).

    Args:
        videos: the ``videos`` table (one row per input file).
        reports: ``{video_id: href}`` of the rendered reports, relative to the index's folder.
        headlines: ``{video_id: headline_figures(...)}`` (optional: else the ``videos`` columns only).
        report_errors: ``{video_id: message}`` for ok videos whose report could not be rendered.

    Returns:
        The template variables: ``rows`` (ok videos, sorted by file name), ``problems`` (the others, with a one-line
        reason), totals, versions, models, the creation span and the status counts.
    """
    headlines = headlines or {}
    report_errors = report_errors or {}
    rows, problems = [], []
    statuses: dict[str, int] = {}
    total_duration = 0.0
    total_viewers = 0
    versions, models = set(), set()
    created = []
    for rec in videos.to_dict("records"):
        v = {k: _clean(x) for k, x in rec.items()}
        vid = str(v.get("video_id", ""))
        status = str(v.get("status") or "unknown")
        statuses[status] = statuses.get(status, 0) + 1
        path = str(v.get("path") or "")
        name = Path(path).name or vid
        if v.get("pipeline_version"):
            versions.add(str(v["pipeline_version"]))
        if v.get("emotion_model"):
            models.add(str(v["emotion_model"]))
        if v.get("created_at") is not None:
            created.append(v["created_at"])
        if status != "ok":
            problems.append({"name": name, "path": path, "status": status,
                             "reason": _first_line(v.get("error")) or "no reason recorded"})
            continue
        h = headlines.get(vid, {})
        viewers = h.get("viewers")
        if viewers is None:  # no headline: the videos table's count (distinct tracks before re-identification)
            viewers = v.get("viewers") if v.get("viewers") is not None else v.get("tracks")
        duration = v.get("duration_s")
        total_duration += float(duration) if isinstance(duration, (int, float)) else 0.0
        total_viewers += int(viewers) if isinstance(viewers, (int, float)) else 0
        peak = h.get("peak")
        rows.append({
            "video_id": vid, "name": name, "path": path,
            "href": relative_ref(reports.get(vid)),
            "report_error": _first_line(report_errors.get(vid)) or None,
            "duration": duration, "viewers": viewers,
            "valence": h.get("mean_valence"), "expressiveness": h.get("mean_expressiveness"),
            "attention": h.get("mean_attention"),
            "smiled": h.get("smiled_share"),
            "dominant": h.get("dominant_emotion"), "expression": h.get("dominant_expression"),
            "peak_second": peak["second"] if peak else None,
            "color": label_colors([h.get("dominant_emotion") or ""]).get(h.get("dominant_emotion") or ""),
            "created_at": v.get("created_at"),
        })
    rows.sort(key=lambda r: r["name"].lower())
    return {
        "rows": rows, "problems": problems, "statuses": statuses, "n_videos": len(videos),
        "total_duration": total_duration, "total_viewers": total_viewers,
        "versions": sorted(versions), "models": sorted(models),
        "created_from": format_when(min(created, key=str)) if created else None,
        "created_to": format_when(max(created, key=str)) if created else None,
        "status_counts": sorted(statuses.items(), key=lambda kv: (_STATUS_ORDER.get(kv[0], 9), kv[0])),
        "generated": _now(),
    }
