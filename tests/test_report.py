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


def _audience(tl: pd.DataFrame) -> pd.DataFrame:
    """:func:`fer_pipeline.aggregate.audience` of each video of ``tl`` (all ``DURATION_S`` long), with its
    ``video_id``."""
    return pd.concat([aggregate.audience(g, LABELS, DURATION_S).assign(video_id=vid)
                      for vid, g in tl.groupby("video_id", sort=True)], ignore_index=True)


def _video_row(video_id: str, path: str, status: str = "ok", error: str | None = None, duration: float = 12.0,
               tracks: int = 3) -> dict:
    return {"video_id": video_id, "path": path, "sha256": "ab" * 32, "status": status, "error": error,
            "duration_s": duration if status == "ok" else None, "fps": 29.97 if status == "ok" else None,
            "width": 1280, "height": 720, "frames_sampled": 60, "faces_detected": 150, "tracks": tracks,
            "processing_s": 4.2, "emotion_model": "emotion-vgg-fer2013.onnx", "detector": "centerface",
            "pipeline_version": "0.1.0", "created_at": pd.Timestamp("2025-01-02 10:00:00", tz="UTC")}


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
    assert data["heatmap"]["tracks"] == ["#1", "#2", "#3"]
    tl = _timeline("vid-a", seed=1)
    assert data["heatmap"]["z"][2][1] == LABELS.index("happy")  # track 3 smiled in second 1
    assert data["heatmap"]["z"][2][4] is None  # track 3 gone after second 3
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
