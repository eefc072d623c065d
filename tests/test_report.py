"""Report stage: headline figures and key moments on hand-checkable tables, and rendering a run from
Hive-partitioned Parquet. The tables are made by the real aggregation (:mod:`fer_pipeline.aggregate`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import VIDEOS, timeline_from_probs

from fer_pipeline import aggregate
from fer_pipeline.metrics import (
    emotion_mix,
    headline_figures,
    key_moments,
    low_confidence_mask,
    opening_hook,
    peak_end,
    peak_trough,
    smiled_share,
    viewer_seconds,
    viewer_summary,
    with_viewer_ids,
)
from fer_pipeline.report import (
    ensure_plotly_js,
    json_for_script,
    render_all,
    render_index,
    render_video_report,
)

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
P = [f"p_{x}" for x in LABELS]
EVIL = "<img src=x onerror=alert(1)>.mp4"
DURATION_S = 12.0


# --------------------------------------------------------------------------------------------------------------------
# Synthetic tables
# --------------------------------------------------------------------------------------------------------------------


def _timeline(video_id: str, seed: int = 0) -> pd.DataFrame:
    """3 tracks: #1 seconds 0-11, #2 seconds 0-10 (never happy), #3 seconds 0-3 (happy in second 1).

    Probabilities are Dirichlet draws from a fixed seed (each row sums to 1), one face sample per track and second,
    aggregated by :func:`fer_pipeline.aggregate.timeline`. Track #2's p_happy is swapped with its smallest
    probability so 'happy' is never its dominant emotion; track #1's p_happy is swapped with its largest in second 5
    and track #3's in second 1, so exactly 2 of 3 viewers smiled at least once.
    """
    rng = np.random.default_rng(seed)
    spans = {1: range(12), 2: range(11), 3: range(4)}
    rows = []
    h = LABELS.index("happy")
    for track, seconds in spans.items():
        for s in seconds:
            p = rng.dirichlet(np.ones(len(LABELS)) * 0.8)
            if track == 2:
                k = int(p.argmin())
                p[h], p[k] = p[k], p[h]
            if (track, s) in {(1, 5), (3, 1)}:
                k = int(p.argmax())
                p[h], p[k] = p[k], p[h]
            rows.append((track, s, p))
    tl = timeline_from_probs(rows, LABELS)
    tl.insert(0, "video_id", video_id)
    return tl


REID_SPANS = {1: range(5), 2: range(11), 3: range(7, 12)}
"""Tracks of :func:`_reid_timeline`: #1 and #3 are one person (viewer 1, never on screen together), #2 is viewer 2."""
REID_VIEWERS = {1: 1, 2: 2, 3: 1}


def _reid_timeline(video_id: str, seed: int = 0) -> pd.DataFrame:
    """3 tracks of 2 viewers (:data:`REID_SPANS`, :data:`REID_VIEWERS`), with ``viewer_id`` as the pipeline writes it.

    Track #1 smiles in second 2 and track #3 in second 8 (both viewer 1); track #2 (viewer 2) never does: 2 of 3
    tracks but 1 of 2 viewers smiled at least once. Viewer 1 is seen in 10 seconds (0-4, 7-11), viewer 2 in 11.
    """
    rng = np.random.default_rng(seed)
    rows = []
    h = LABELS.index("happy")
    for track, seconds in REID_SPANS.items():
        for s in seconds:
            p = rng.dirichlet(np.ones(len(LABELS)) * 0.8)
            k = int(p.argmax()) if (track, s) in {(1, 2), (3, 8)} else int(p.argmin()) if p.argmax() == h else h
            p[h], p[k] = p[k], p[h]
            rows.append((track, s, p))
    tl = timeline_from_probs(rows, LABELS, viewers=REID_VIEWERS)
    tl.insert(0, "video_id", video_id)
    return tl


def _jpeg(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 120, 90)).save(path, format="JPEG")


def _audience(tl: pd.DataFrame) -> pd.DataFrame:
    """:func:`fer_pipeline.aggregate.audience` of each video of ``tl`` (all ``DURATION_S`` long), with its
    ``video_id``."""
    return pd.concat([aggregate.audience(g, LABELS, DURATION_S).assign(video_id=vid)
                      for vid, g in tl.groupby("video_id", sort=True)], ignore_index=True)


def _video_row(video_id: str, path: str, status: str = "ok", error: str | None = None, duration: float = 12.0,
               tracks: int = 3, viewers: int | None = None) -> dict:
    """A ``videos`` row; with ``viewers`` it has the ``viewers`` column of re-identification (else: an old row)."""
    row = {"video_id": video_id, "path": path, "sha256": "ab" * 32, "status": status, "error": error,
           "duration_s": duration if status == "ok" else None, "fps": 29.97 if status == "ok" else None,
           "width": 1280, "height": 720, "frames_sampled": 60, "faces_detected": 150, "tracks": tracks,
           "processing_s": 4.2, "emotion_model": "emotion-vgg-fer2013.onnx", "detector": "centerface",
           "pipeline_version": "0.1.0", "created_at": pd.Timestamp("2025-01-02 10:00:00", tz="UTC")}
    if viewers is not None:
        row["viewers"] = viewers
    return row


def _write(df: pd.DataFrame, folder: Path) -> None:
    df.to_parquet(folder, partition_cols=["video_id"], index=False)


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """An output folder with two ok videos (one with a hostile file name) and one failed file."""
    out = tmp_path / "out"
    tl = pd.concat([_timeline("vid-a", seed=1), _timeline("vid-evil", seed=2)], ignore_index=True)
    _write(tl, out / "timeline")
    _write(_audience(tl), out / "audience")
    videos = pd.DataFrame([
        _video_row("vid-a", "/data/recordings/ad-spot-a.mp4"),
        _video_row("vid-evil", f"/data/recordings/{EVIL}"),
        _video_row("vid-bad", "/data/recordings/broken <b>clip</b>.mp4", status="failed",
                   error="OSError: cannot decode /data/recordings/broken.mp4: moov atom not found\nTraceback ...",
                   tracks=0),
    ])
    _write(videos, out / "videos")
    return out


@pytest.fixture()
def reid_run_dir(tmp_path: Path) -> Path:
    """An output folder written with re-identification: ``vid-r`` has 3 tracks of 2 viewers (``viewer_id`` in the
    timeline, ``viewers`` in ``videos``) and viewer thumbnails (``viewer-<id>.jpg``) plus one key-moment frame."""
    out = tmp_path / "out"
    tl = _reid_timeline("vid-r", seed=3)
    _write(tl, out / "timeline")
    _write(_audience(tl), out / "audience")
    _write(pd.DataFrame([_video_row("vid-r", "/data/recordings/two-people.mp4", tracks=3, viewers=2)]),
           out / "videos")
    for name in ("viewer-1.jpg", "viewer-2.jpg", "second-0.jpg"):
        _jpeg(out / "reports" / "thumbs" / "vid-r" / name)
    return out


def _report_data(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html,
                                re.DOTALL).group(1))


def _viewer_table_rows(html: str) -> list[str]:
    body = re.search(r'<table class="viewers">.*?<tbody>(.*?)</tbody>', html, re.DOTALL).group(1)
    return re.findall(r"<tr>(.*?)</tr>", body, re.DOTALL)


def _kpi(html: str, key: str) -> tuple[str, str]:
    """``(value, detail)`` text of the headline card titled ``key``."""
    m = re.search(rf'<div class="k">{re.escape(key)}</div>\s*<div class="v[^"]*">(.*?)</div>\s*'
                  rf'<div class="d">(.*?)</div>', html, re.DOTALL)
    assert m is not None, key
    return m.group(1).strip(), m.group(2).strip()


# --------------------------------------------------------------------------------------------------------------------
# Headline figures
# --------------------------------------------------------------------------------------------------------------------


def test_labels_come_from_p_columns():
    cols = ["video_id", "second", "p_neutral", "p_happy", "p_contempt", "share_happy", "valence", "p_"]
    assert aggregate.emotion_labels(cols) == ["neutral", "happy", "contempt"]


def test_derived_columns_and_rebuilt_audience_are_the_aggregate_stage_s():
    """Tables lacking valence/expressiveness/emotion, or the audience, get them from aggregate's own functions."""
    tl = _timeline("v")
    bare = tl.drop(columns=["valence", "expressiveness", "emotion"])
    filled = aggregate.with_derived_columns(bare)
    as_object = {"emotion": object}  # timeline's may be pandas' str dtype; filled in, it is object (None allowed)
    pd.testing.assert_frame_equal(filled[tl.columns].astype(as_object), tl.astype(as_object), check_exact=True)
    assert aggregate.with_derived_columns(tl) is tl  # nothing missing: the same frame
    rebuilt = aggregate.audience_from_timeline(bare, DURATION_S + 2)
    pd.testing.assert_frame_equal(rebuilt, aggregate.audience(tl, LABELS, DURATION_S + 2), check_exact=True)
    assert rebuilt["viewers"].tolist()[-3:] == [1, 0, 0]  # the video's last seconds without viewers are rows too
    emo = aggregate.dominant_emotion(np.array([[0.1, 0.7, 0.2], [np.nan, 0.2, 0.2], [np.nan] * 3]), ["a", "b", "c"])
    assert emo.tolist() == ["b", "b", None]  # first label wins ties; NaN ignored


def test_headline_figures_on_constructed_tables():
    tl = _timeline("v")
    au = _audience(tl)
    h = headline_figures(tl, au, duration_s=DURATION_S)
    assert h["labels"] == LABELS
    assert h["viewers"] == 3
    assert h["peak_viewers"] == 3
    assert h["seconds_with_viewers"] == 12
    assert h["mean_valence"] == pytest.approx(tl["valence"].mean(), abs=1e-12)
    assert h["mean_expressiveness"] == pytest.approx(tl["expressiveness"].mean(), abs=1e-12)
    # viewer-weighted audience mean == timeline mean (the same viewer-seconds)
    w = au["viewers"]
    assert h["mean_valence"] == pytest.approx((au["valence"] * w).sum() / w.sum(), abs=1e-12)
    assert h["smiled_share"] == pytest.approx(2 / 3, abs=0)
    mix = h["emotion_mix"]
    assert list(mix) == LABELS
    assert sum(mix.values()) == pytest.approx(1.0)
    for x in LABELS:
        assert mix[x] == pytest.approx(tl[f"p_{x}"].mean())
    assert h["dominant_emotion"] == max(mix, key=mix.get)
    # only second 11 has 1 viewer (< ceil(0.5 * 3) = 2): low confidence
    assert h["low_confidence_threshold"] == 2
    assert h["low_confidence_seconds"] == [11]


def test_headline_figures_rebuild_audience_when_missing():
    tl = _timeline("v")
    h = headline_figures(tl, pd.DataFrame(), duration_s=DURATION_S)
    ref = headline_figures(tl, _audience(tl), duration_s=DURATION_S)
    assert h["viewers"] == 3
    for x in LABELS:  # from the rebuilt audience: the mean over viewer-seconds
        assert h["emotion_mix"][x] == pytest.approx(tl[f"p_{x}"].mean())
    for key in ("peak", "trough", "peak_end", "hook", "low_confidence_seconds", "seconds_with_viewers"):
        assert h[key] == ref[key], key


def test_headline_figures_empty():
    h = headline_figures(pd.DataFrame(), pd.DataFrame())
    assert h["viewers"] is None and h["mean_valence"] is None and h["smiled_share"] is None
    assert h["emotion_mix"] == {} and h["peak"] is None and h["low_confidence_seconds"] == []


def test_smiled_share_exact():
    tl = pd.DataFrame({"track_id": [1, 1, 2, 2, 3, 4], "second": [0, 1, 0, 1, 0, 0],
                       "emotion": ["neutral", "happy", "sad", "neutral", "happy", "surprise"]})
    assert smiled_share(tl) == 0.5
    assert smiled_share(tl.iloc[:0]) is None


def _hand_audience() -> pd.DataFrame:
    # second:     0     1     2     3     4     5
    return pd.DataFrame({
        "second": [0, 1, 2, 3, 4, 5],
        "viewers": [4, 4, 1, 4, 2, 4],
        "valence": [0.10, 0.30, 0.90, -0.20, -0.80, 0.30],
        "expressiveness": [0.5, 0.7, 0.9, 0.4, 0.2, 0.6],
        "p_happy": [0.2, 0.4, 0.95, 0.1, 0.05, 0.3],
        "p_neutral": [0.5, 0.3, 0.05, 0.6, 0.8, 0.4],
    })


def test_peak_trough_skips_low_confidence_seconds():
    au = _hand_audience()
    # threshold ceil(0.5 * 4) = 2: second 2 (1 viewer) cannot be the peak; second 4 (2 viewers) can be the trough
    assert low_confidence_mask(au).tolist() == [False, False, True, False, False, False]
    pt = peak_trough(au)
    assert pt["peak"] == {"second": 1, "value": 0.30, "viewers": 4}  # tie with second 5: earliest wins
    assert pt["trough"] == {"second": 4, "value": -0.80, "viewers": 2}


def test_key_moments_on_hand_checkable_audience():
    au = _hand_audience()
    km = key_moments(au, k=1)
    # headline moments skip the low-confidence second 2 (1 of 4 viewers); ties go to the earliest second
    assert km["peak"] == {"second": 1, "value": 0.30, "viewers": 4}
    assert km["trough"] == {"second": 4, "value": -0.80, "viewers": 2}
    assert km["label_peak"] == {"label": "happy", "second": 1, "value": 0.4, "viewers": 4}
    # frames: second 0, the highest (2, low-confidence or not) and lowest (4) valence, and the headline moments
    assert km["seconds"] == [0, 1, 2, 4]
    assert key_moments(au)["seconds"] == [0, 1, 2, 3, 4, 5]  # k = 3: top 2, 1, 5 and bottom 4, 3, 0
    assert key_moments(au, k=0)["seconds"] == [0, 1, 4]
    h = headline_figures(pd.DataFrame(), au)
    assert (h["peak"], h["trough"]) == (km["peak"], km["trough"])
    assert (h["peak_end"]["peak_second"], h["peak_end"]["peak"]) == (1, 0.4)


def test_key_moments_keep_a_smile_peak_outside_the_valence_extremes():
    # p_happy peaks in second 2, whose valence is neither among the 1 highest nor the 1 lowest
    au = pd.DataFrame({"second": [0, 1, 2, 3, 4], "viewers": [2, 2, 2, 2, 0],
                       "valence": [0.0, 0.6, 0.2, -0.5, np.nan], "p_happy": [0.1, 0.3, 0.5, 0.0, np.nan]})
    km = key_moments(au, k=1)
    assert km["label_peak"]["second"] == 2 and km["seconds"] == [0, 1, 2, 3]
    assert km["peak"]["second"] == 1 and km["trough"]["second"] == 3


def test_key_moments_without_viewers_or_columns():
    assert key_moments(pd.DataFrame()) == {"peak": None, "trough": None, "label_peak": None, "seconds": [0]}
    empty = aggregate.audience(aggregate.timeline(pd.DataFrame(columns=["track_id", "timestamp_s", *P]), LABELS),
                               LABELS, 5.0)
    assert key_moments(empty) == {"peak": None, "trough": None, "label_peak": None, "seconds": [0]}
    no_happy = _hand_audience().drop(columns=["p_happy"])
    assert key_moments(no_happy)["label_peak"] is None and key_moments(no_happy)["peak"]["second"] == 1


def test_pipeline_thumbnails_follow_key_moments():
    from fer_pipeline.pipeline import moment_seconds

    au = _audience(_timeline("v", seed=4))
    for k in (0, 1, 3):
        assert moment_seconds(au, k) == key_moments(au, k)["seconds"]
    assert moment_seconds(_hand_audience()) == key_moments(_hand_audience())["seconds"]


@pytest.mark.slow
def test_every_key_moment_of_a_real_clip_has_its_thumbnail(tmp_path: Path):
    """A real clip analysed by the pipeline: each key moment the report shows has its saved frame, and the frames
    the pipeline saved are exactly the key moments' seconds."""
    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.models import Models
    from fer_pipeline.pipeline import analyze_video
    from fer_pipeline.store import read_parts

    cfg = PipelineConfig.load(None, {"output.reports": False})
    res = analyze_video(VIDEOS / "WolfgangLanger_Pexels.mp4", tmp_path, cfg, Models.load(cfg))
    assert res["status"] == "ok", res
    vid = res["video_id"]
    render_all(tmp_path)
    reports = tmp_path / "reports"
    html = (reports / f"{vid}.html").read_text(encoding="utf-8")
    cards = re.findall(r'<div class="moment">(.*?)<div class="body">', html, re.DOTALL)
    assert len(cards) == 3  # highest and lowest valence, peak happy
    for card in cards:
        src = re.search(r'<img src="([^"]+)"', card)
        assert src is not None, card
        assert (reports / src.group(1)).is_file(), src.group(1)
    km = key_moments(read_parts(tmp_path / "audience", vid))
    saved = sorted(int(f.stem.partition("-")[2]) for f in (reports / "thumbs" / vid).glob("second-*.jpg"))
    assert saved == km["seconds"]
    shown = re.findall(r'src="thumbs/[^"/]+/second-(\d+)\.jpg"', html)
    assert sorted(set(map(int, shown))) == km["seconds"]  # the cards and the gallery show every saved frame


def test_opening_hook_and_peak_end():
    au = _hand_audience()
    hook = opening_hook(au, seconds=3)
    w = np.array([4, 4, 1])
    assert hook["expressiveness"] == pytest.approx((np.array([0.5, 0.7, 0.9]) * w).sum() / w.sum())
    assert hook["valence"] == pytest.approx((np.array([0.10, 0.30, 0.90]) * w).sum() / w.sum())
    pe = peak_end(au, end_s=3, duration_s=6.0)
    assert pe["peak"] == pytest.approx(0.4) and pe["peak_second"] == 1  # 0.95 at second 2 is low-confidence
    w = np.array([4, 2, 4])
    assert pe["end"] == pytest.approx((np.array([0.1, 0.05, 0.3]) * w).sum() / w.sum())
    assert pe["end_from_s"] == 3.0


def test_emotion_mix_is_viewer_weighted():
    au = pd.DataFrame({"second": [0, 1], "viewers": [3, 1], "p_happy": [0.8, 0.0], "p_neutral": [0.2, 1.0]})
    assert emotion_mix(au) == pytest.approx({"happy": 0.6, "neutral": 0.4})


def test_json_for_script_cannot_close_the_script():
    text = json_for_script({"name": "</script><script>alert(1)</script>", "x": float("nan"), "y": np.int64(3),
                            "z": "a\u2028b&'"})
    assert "</" not in text and "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>", "x": None, "y": 3, "z": "a\u2028b&'"}


# --------------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------------


def _external_refs(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, flags=re.IGNORECASE)


def test_render_all(run_dir: Path):
    written = render_all(run_dir, model_card={"name": "emotion-vgg-fer2013", "labels": LABELS,
                                               "metrics": {"test": {"accuracy": 0.7123, "macro_f1": 0.69}}})
    reports = run_dir / "reports"
    index = run_dir / "index.html"
    assert index.is_file() and written[-1] == index
    assert sorted(p.name for p in written[:-1]) == ["vid-a.html", "vid-evil.html"]
    assert (reports / "plotly.min.js").stat().st_size > 1_000_000
    assert not (reports / "vid-bad.html").exists()
    assert not list(run_dir.rglob("*.tmp"))

    idx = index.read_text(encoding="utf-8")
    assert 'href="reports/vid-a.html"' in idx and 'href="reports/vid-evil.html"' in idx
    assert "OSError: cannot decode /data/recordings/broken.mp4: moov atom not found" in idx
    assert "Traceback" not in idx  # one-line reason
    assert "broken &lt;b&gt;clip&lt;/b&gt;.mp4" in idx and "<b>clip</b>" not in idx

    for page in (idx, (reports / "vid-evil.html").read_text(encoding="utf-8")):
        assert "&lt;img src=x onerror=alert(1)&gt;.mp4" in page
        assert "<img src=x" not in page
        assert _external_refs(page) == []

    html = (reports / "vid-a.html").read_text(encoding="utf-8")
    assert '<script src="plotly.min.js"></script>' in html
    assert _external_refs(html) == []
    for chart in ("chart-shares", "chart-valence", "chart-heatmap", "chart-mix"):
        assert f'id="{chart}"' in html
    assert "71.2%" in html and "emotion-vgg-fer2013" in html  # model card summary

    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.DOTALL)
                      .group(1))
    assert data["labels"] == LABELS and data["seconds"] == list(range(12))
    assert data["viewers"] == [3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 1]
    assert data["lowRanges"] == [[11, 12]]
    # tables without viewer_id (written before re-identification): each track is its own viewer
    assert data["heatmap"]["viewers"] == ["Viewer 1", "Viewer 2", "Viewer 3"]
    assert data["heatmap"]["ids"] == [1, 2, 3]
    tl = _timeline("vid-a", seed=1)
    assert data["heatmap"]["z"][2][1] == LABELS.index("happy")  # track (viewer) 3 smiled in second 1
    assert data["heatmap"]["z"][2][4] is None  # track (viewer) 3 gone after second 3
    assert data["mix"] == pytest.approx([round(tl[c].mean(), 4) for c in P], abs=1e-4)


def test_render_all_reads_headlines_into_index(run_dir: Path):
    render_all(run_dir)
    idx = (run_dir / "index.html").read_text(encoding="utf-8")
    tl = _timeline("vid-a", seed=1)
    v = round(tl["valence"].mean(), 2)
    shown = (f"+{v:.2f}" if v > 0 else f"\u2212{abs(v):.2f}") if v != 0 else "0.00"
    assert shown in idx
    assert "67%" in idx  # 2 of 3 viewers smiled at least once


def test_render_all_when_every_video_failed(tmp_path: Path):
    out = tmp_path / "out"
    _write(pd.DataFrame([_video_row("v1", "/x/a.mp4", status="failed", error="ValueError: no video stream"),
                         _video_row("v2", "/x/b.txt", status="skipped", error="not a video file")]), out / "videos")
    written = render_all(out)
    assert written == [out / "index.html"]
    idx = written[0].read_text(encoding="utf-8")
    assert "ValueError: no video stream" in idx and "not a video file" in idx
    assert "No video of this run was analysed successfully" in idx


def test_render_all_without_videos_table(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="videos"):
        render_all(tmp_path)


def test_ok_video_without_faces(tmp_path: Path):
    video = _video_row("v0", "/x/empty-room.mp4", tracks=0)
    out = render_video_report(video, pd.DataFrame(), pd.DataFrame(), tmp_path / "reports" / "v0.html")
    html = out.read_text(encoding="utf-8")
    assert "No faces were detected" in html and "empty-room.mp4" in html
    assert _external_refs(html) == []


def test_thumbnails_are_relative_only(tmp_path: Path):
    tl = _timeline("v")
    thumbs = {"tracks": {1: "thumbs/track 1.jpg", 2: "https://cdn.example.com/t2.jpg", 3: "/abs/t3.jpg"},
              "moments": {"5": "thumbs/s5.jpg", 7: "javascript:alert(1)"}}
    out = render_video_report(_video_row("v", "/x/v.mp4"), tl, _audience(tl), tmp_path / "v.html",
                              thumbnails=thumbs)
    html = out.read_text(encoding="utf-8")
    assert 'src="thumbs/track%201.jpg"' in html and 'src="thumbs/s5.jpg"' in html
    assert "cdn.example.com" not in html and "/abs/t3.jpg" not in html and "javascript:" not in html


def test_render_index_directly(tmp_path: Path):
    videos = pd.DataFrame([_video_row("a", "/x/a.mp4"), _video_row("b", "/x/b.mp4", status="failed", error=None)])
    out = render_index(videos, tmp_path / "index.html", {"a": "reports/a.html"})
    html = out.read_text(encoding="utf-8")
    assert 'href="reports/a.html"' in html and "no reason recorded" in html
    assert "aria-sort" in html  # the sorting script


def test_plotly_js_written_once(tmp_path: Path):
    first = ensure_plotly_js(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert ensure_plotly_js(tmp_path).stat().st_mtime_ns == mtime


def test_reader_keeps_video_ids_as_strings(tmp_path: Path):
    """The report reads its tables with fer_pipeline.store.read_parts: ids like "0001" stay strings."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    from fer_pipeline.store import read_parts

    df = pd.DataFrame({"video_id": ["0001", "0001", "a b"], "second": [0, 1, 0], "viewers": [1, 2, 3]})
    ds.write_dataset(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "audience", format="parquet",
                     partitioning=["video_id"], partitioning_flavor="hive")
    one = read_parts(tmp_path / "audience", "0001")
    assert one["video_id"].tolist() == ["0001", "0001"] and sorted(one["second"]) == [0, 1]
    assert read_parts(tmp_path / "audience", "missing").empty
    assert read_parts(tmp_path / "nothing-here").empty


def test_attention_headline_index_and_viewer_rows(tmp_path: Path):
    tl = _timeline("v")
    rng = np.random.default_rng(5)
    tl["attention"] = rng.choice([0.0, 0.2, 1.0], len(tl))
    au = _audience(tl)
    h = headline_figures(tl, au, duration_s=DURATION_S)
    assert h["mean_attention"] == pytest.approx(tl["attention"].mean())
    assert h["hook"]["attention"] == pytest.approx(tl.loc[tl.second < 8, "attention"].mean())
    # rebuilt from the timeline alone, and absent for tables written before head pose existed
    assert headline_figures(tl, pd.DataFrame())["mean_attention"] == pytest.approx(tl["attention"].mean())
    assert headline_figures(tl.drop(columns=["attention"]), au.drop(columns=["attention"]))["mean_attention"] is None

    thumbs = {"tracks": {1: "thumbs/v/track-1.jpg", 3: "thumbs/v/track-3.jpg"}}
    out = render_video_report(_video_row("v", "/x/v.mp4"), tl, au, tmp_path / "reports" / "v.html",
                              thumbnails=thumbs)
    html = out.read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.DOTALL).group(1))
    assert data["hasAttention"] and data["attention"] == pytest.approx(au["attention"].round(4).tolist())
    assert data["heatmap"]["thumbs"] == ["thumbs/v/track-1.jpg", None, "thumbs/v/track-3.jpg"]
    shown = f"{100 * tl['attention'].mean():.0f}%"
    assert shown in html
    idx = render_index(pd.DataFrame([_video_row("v", "/x/v.mp4")]), tmp_path / "index.html",
                       {"v": "reports/v.html"}, {"v": h}).read_text(encoding="utf-8")
    assert "Attention" in idx and shown in idx
    # tables without attention: the report still renders, showing a dash
    old = render_video_report(_video_row("v", "/x/v.mp4"), tl.drop(columns=["attention"]),
                              au.drop(columns=["attention"]), tmp_path / "old.html").read_text(encoding="utf-8")
    assert "no head pose in these tables" in old


def test_index_shows_the_whole_video_id(run_dir: Path):
    render_all(run_dir)
    idx = (run_dir / "index.html").read_text(encoding="utf-8")
    assert ">vid-evil</div>" in idx and ">vid-a</div>" in idx


# --------------------------------------------------------------------------------------------------------------------
# Viewers (re-identification): per-viewer figures count viewers, not tracks
# --------------------------------------------------------------------------------------------------------------------


def test_viewer_ids_fill_in_for_old_tables():
    tl = _timeline("v")
    assert "viewer_id" not in tl.columns
    filled = with_viewer_ids(tl)
    assert list(filled.columns[:3]) == ["video_id", "track_id", "viewer_id"]  # right after track_id
    assert filled["viewer_id"].dtype == np.int64 and (filled["viewer_id"] == filled["track_id"]).all()
    reid = _reid_timeline("v")
    assert with_viewer_ids(reid) is reid  # complete: the same frame
    # parts read together with newer ones: all NaN = old (viewer := track); some NaN = ids of their own
    assert with_viewer_ids(tl.assign(viewer_id=np.nan))["viewer_id"].tolist() == tl["track_id"].tolist()
    part = reid.astype({"viewer_id": float})
    part.loc[part.track_id == 2, "viewer_id"] = np.nan
    ids = with_viewer_ids(part)
    assert ids["viewer_id"].dtype == np.int64
    assert set(ids.loc[ids.track_id == 2, "viewer_id"]) == {2} and set(ids.loc[ids.track_id != 2, "viewer_id"]) == {1}
    part.loc[part.track_id == 3, "viewer_id"] = np.nan  # viewer 1's other track must not join another viewer
    ids = with_viewer_ids(part)
    assert ids.groupby("track_id")["viewer_id"].first().to_dict() == {1: 1, 2: 2, 3: 3}


def test_headline_figures_count_viewers_not_tracks():
    tl = _reid_timeline("v")
    au = _audience(tl)
    assert au["viewers"].max() == 2  # a viewer's tracks never overlap: at most 2 in any second
    h = headline_figures(tl, au, duration_s=DURATION_S)
    assert h["viewers"] == 2 and h["timeline_viewers"] == 2 and h["tracks"] == 3
    assert h["smiled_share"] == 0.5 and h["smiled_viewers"] == 1  # per track it would be 2 of 3
    assert smiled_share(tl) == 0.5
    assert smiled_share(tl.drop(columns=["viewer_id"])) == pytest.approx(2 / 3)  # old tables: tracks are viewers
    assert h["mean_valence"] == pytest.approx(tl["valence"].mean(), abs=1e-12)  # one row per viewer-second
    assert headline_figures(tl, au, viewers=5)["viewers"] == 5  # the videos table's count wins when known
    assert headline_figures(tl, au, viewers=float("nan"))["viewers"] == 2
    # rebuilt audience counts viewers per second
    assert headline_figures(tl, pd.DataFrame(), duration_s=DURATION_S)["peak_viewers"] == 2


def test_viewer_summary_has_one_row_per_viewer():
    vs = viewer_summary(_reid_timeline("v"))
    assert vs["viewer_id"].tolist() == [2, 1]  # by seconds on screen: viewer 2 11 s, viewer 1 10 s
    assert vs["tracks"].tolist() == [1, 2]
    assert vs["seconds"].tolist() == [11, 10]
    assert vs[["first_second", "last_second"]].values.tolist() == [[0, 10], [0, 11]]
    assert vs["smiled"].tolist() == [False, True]
    old = viewer_summary(_timeline("v"))
    assert old["viewer_id"].tolist() == [1, 2, 3] and old["tracks"].tolist() == [1, 1, 1]


def test_overlapping_rows_of_one_viewer_are_merged():
    """Cannot happen by contract (a viewer's tracks never overlap), but must not count a viewer twice: the rows of a
    viewer's second are merged by the mean of their probabilities, then argmax."""
    p = np.zeros(len(LABELS))
    hap, neu = LABELS.index("happy"), LABELS.index("neutral")
    a, b, c = p.copy(), p.copy(), p.copy()
    a[[hap, neu]] = [0.6, 0.4]
    b[[hap, neu]] = [0.1, 0.9]
    c[neu] = 1.0
    tl = timeline_from_probs([(1, 0, a), (3, 0, b), (1, 1, c), (2, 0, c)], LABELS, viewers={1: 1, 3: 1, 2: 2})
    vs = viewer_seconds(tl)
    assert list(zip(vs.viewer_id, vs.second)) == [(1, 0), (1, 1), (2, 0)]
    first = vs.iloc[0]
    assert first["p_happy"] == pytest.approx(0.35) and first["emotion"] == "neutral"
    assert first["valence"] == pytest.approx(0.35) and first["expressiveness"] == pytest.approx(0.35)
    assert first["n_samples"] == 2 and first["track_id"] == 1
    assert smiled_share(tl) == 0.0  # track 1's happy second is a neutral second of viewer 1
    h = headline_figures(tl, pd.DataFrame(), duration_s=2.0)
    assert h["viewers"] == 2 and h["tracks"] == 3 and h["peak_viewers"] == 2  # rebuilt audience: 2 in second 0
    assert viewer_summary(tl)["seconds"].tolist() == [2, 1]


def test_render_all_reidentified_viewers(reid_run_dir: Path):
    render_all(reid_run_dir)
    reports = reid_run_dir / "reports"
    html = (reports / "vid-r.html").read_text(encoding="utf-8")
    data = _report_data(html)
    heat = data["heatmap"]
    assert heat["viewers"] == ["Viewer 1", "Viewer 2"] and heat["ids"] == [1, 2]
    assert heat["thumbs"] == ["thumbs/vid-r/viewer-1.jpg", "thumbs/vid-r/viewer-2.jpg"]
    happy = LABELS.index("happy")
    row = heat["z"][0]  # viewer 1: track 1 in seconds 0-4, track 3 in seconds 7-11
    assert row[2] == happy and row[8] == happy and row[5] is None and row[6] is None
    assert all(k is not None for k in row[:5] + row[7:])
    assert heat["z"][1][11] is None and happy not in heat["z"][1]
    assert data["viewers"] == [2, 2, 2, 2, 2, 1, 1, 2, 2, 2, 2, 1]  # audience: viewers per second

    assert _kpi(html, "Viewers")[0] == "2"
    value, detail = _kpi(html, "Smiled at least once")
    assert value == "50%" and detail == "1 of 2 viewers"
    rows = _viewer_table_rows(html)
    assert len(rows) == 2
    assert "Viewer 2" in rows[0] and "Viewer 1" in rows[1] and "2 tracks" in rows[1] and "tracks" not in rows[0]
    assert 'src="thumbs/vid-r/viewer-1.jpg"' in html and 'src="thumbs/vid-r/viewer-2.jpg"' in html
    for src in re.findall(r'src="(thumbs/[^"]+)"', html):
        assert (reports / src).is_file(), src
    assert "track-" not in html
    assert re.search(r"<th>Faces detected</th><td>150 in 3 tracks</td>", html)
    assert re.search(r"<th>Viewers</th><td>2</td>", html)
    assert "joins the tracks" in html and "analysed before" not in html

    idx = (reid_run_dir / "index.html").read_text(encoding="utf-8")
    assert re.search(r'data-sort="2">2</td>', idx) and "50%" in idx
    assert _kpi(idx, "Viewers")[0] == "2"


def test_render_all_old_output_folder_counts_tracks_as_viewers(run_dir: Path):
    """A folder written before re-identification (no viewer_id, no videos.viewers, track-<id>.jpg thumbnails)
    renders as before: one viewer per track, each with its track's thumbnail."""
    for name in ("track-1.jpg", "track-3.jpg", "second-0.jpg"):
        _jpeg(run_dir / "reports" / "thumbs" / "vid-a" / name)
    render_all(run_dir)
    html = (run_dir / "reports" / "vid-a.html").read_text(encoding="utf-8")
    heat = _report_data(html)["heatmap"]
    assert heat["viewers"] == ["Viewer 1", "Viewer 2", "Viewer 3"]
    assert heat["thumbs"] == ["thumbs/vid-a/track-1.jpg", None, "thumbs/vid-a/track-3.jpg"]
    assert len(_viewer_table_rows(html)) == 3
    assert _kpi(html, "Viewers")[0] == "3"
    assert _kpi(html, "Smiled at least once") == ("67%", "2 of 3 viewers")
    assert 'src="thumbs/vid-a/track-1.jpg"' in html
    assert "analysed before viewers were re-identified" in html
    assert re.search(r"<th>Faces detected</th><td>150 in 3 tracks</td>", html)
    assert re.search(r"<th>Viewers</th><td>3 \(one per track: analysed before re-identification\)</td>", html)


def test_viewer_thumbnail_falls_back_to_its_tracks(tmp_path: Path):
    """Viewer thumbnails win; a viewer without one shows one of its own tracks' (never another viewer's)."""
    tl = _reid_timeline("v")
    au = _audience(tl)
    thumbs = {"viewers": {2: "thumbs/v/viewer-2.jpg"}, "tracks": {3: "thumbs/v/track-3.jpg",
                                                                 2: "thumbs/v/track-2.jpg"}}
    html = render_video_report(_video_row("v", "/x/v.mp4", viewers=2), tl, au, tmp_path / "v.html",
                               thumbnails=thumbs).read_text(encoding="utf-8")
    assert _report_data(html)["heatmap"]["thumbs"] == ["thumbs/v/track-3.jpg", "thumbs/v/viewer-2.jpg"]
    assert "track-2.jpg" not in html


def test_saved_thumbnails_reads_viewer_track_and_second_files(tmp_path: Path):
    from fer_pipeline.report import saved_thumbnails

    for name in ("viewer-1.jpg", "viewer-12.jpg", "track-4.jpg", "second-3.jpg", "other-1.jpg", "viewer-x.jpg"):
        _jpeg(tmp_path / "thumbs" / "v" / name)
    assert saved_thumbnails(tmp_path, "v") == {
        "viewers": {1: "thumbs/v/viewer-1.jpg", 12: "thumbs/v/viewer-12.jpg"},
        "tracks": {4: "thumbs/v/track-4.jpg"}, "moments": {3: "thumbs/v/second-3.jpg"}, "explain": {}}
    assert saved_thumbnails(tmp_path, "missing") == {"viewers": {}, "tracks": {}, "moments": {}, "explain": {}}


def test_saved_thumbnails_reads_the_key_moment_maps_and_skips_what_is_missing(tmp_path: Path):
    import json

    from fer_pipeline.report import saved_thumbnails

    folder = tmp_path / "thumbs" / "v"
    _jpeg(folder / "explain-3-1.png")
    regions = {"upper": 0.2, "middle": 0.3, "lower": 0.5}
    (folder / "explain.json").write_text(json.dumps([
        {"second": 3, "viewer_id": 1, "file": "explain-3-1.png", "label": "happy", "p": 0.9, "regions": regions},
        {"second": 5, "viewer_id": 2, "file": "explain-5-2.png", "label": "sad", "p": 0.5, "regions": regions}]))
    assert saved_thumbnails(tmp_path, "v")["explain"] == {3: [
        {"viewer_id": 1, "ref": "thumbs/v/explain-3-1.png", "label": "happy", "p": 0.9, "regions": regions}]}
    (folder / "explain.json").write_text("[{\"second\": ")  # cut short
    assert saved_thumbnails(tmp_path, "v")["explain"] == {}
