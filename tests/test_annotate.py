"""Annotated video (fer_pipeline.annotate): real clips analysed, annotated, and the result checked with PyAV against
the source: frames, rate, duration, codec, boxes drawn where the faces are and nothing else changed."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest

from conftest import VIDEOS, write_video
from fer_pipeline.annotate import annotate_from_output, annotate_video, annotated_path, face_labels, hold_spans
from fer_pipeline.config import PipelineConfig
from fer_pipeline.decode.buffers import apply_rotation
from fer_pipeline.decode.container import probe
from fer_pipeline.store import read_parts

SAMPLE_T = 0.2  # 1 / decode.sample_fps (5 Hz default)


# --- the drawing rule, on made-up rows (fast) -----------------------------------------------------------------

def test_hold_spans_hold_until_next_sample_or_one_interval():
    faces = pd.DataFrame({"track_id": [1, 1, 1, 1, 2], "timestamp_s": [0.0, 0.2, 0.4, 1.0, 0.2]})
    start, end = hold_spans(faces, SAMPLE_T)
    np.testing.assert_allclose(start, [0.0, 0.2, 0.4, 1.0, 0.2])
    # held to the next sample; a gap of 0.6 s (> 1.5 T: the face was missed) and the ends: one interval only
    np.testing.assert_allclose(end, [0.2, 0.4, 0.6, 1.2, 0.4])
    # without the interval it is estimated from the tracks' spacing
    np.testing.assert_allclose(hold_spans(faces)[1], end)


def test_labels_name_viewer_else_track_and_dominant_emotion():
    faces = pd.DataFrame({"track_id": [3, 4], "viewer_id": pd.array([2, None], dtype="Int64"),
                          "p_happy": [0.87, 0.1], "p_sad": [0.13, 0.9]})
    text, key = face_labels(faces, ["happy", "sad"])
    assert text == ["viewer 2 | happy 87%", "track 4 | sad 90%"]
    assert key.tolist() == [2, 4]


# --- real clips ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    """single_face, WolfgangLanger (23.976 fps), face_noface (HEVC, variable rate, the face leaves) and a copy of
    single_face recorded turned (display matrix 90 degrees) analysed and annotated once."""
    from fer_pipeline.models import Models
    from fer_pipeline.pipeline import analyze_video

    d = tmp_path_factory.mktemp("annotate")
    c = av.open(str(VIDEOS / "single_face.mp4"))
    upright = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    c.close()
    rotated = write_video(d / "turned.mp4", upright, fps=30, display_cw=90, options={"crf": "12"})
    cfg = PipelineConfig.load(None, {"output.reports": False})
    models = Models.load(cfg)
    out = d / "out"
    res = {}
    for src in (VIDEOS / "single_face.mp4", VIDEOS / "WolfgangLanger_Pexels.mp4", VIDEOS / "face_noface.mov",
                rotated):
        row = analyze_video(str(src), str(out), cfg, models=models)
        assert row["status"] == "ok", row
        seen = []
        path = annotate_from_output(out, src, progress=seen.append)
        assert path == annotated_path(out, row["video_id"]) and seen
        res[src.name] = (src, path, read_parts(out / "faces", row["video_id"]))
    return out, res


def _stream_facts(path: Path) -> dict:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        pts = [f.pts for f in c.decode(s)]
        return {"codec": s.codec_context.name, "rate": s.average_rate, "tb": s.time_base, "pts": pts,
                "pix_fmt": s.codec_context.pix_fmt, "size": (s.codec_context.width, s.codec_context.height),
                "duration": float(s.duration * s.time_base), "audio": [a.codec_context.name for a in c.streams.audio]}


def _frames(path: Path, rotation: int = 0):
    """Upright RGB frames, one at a time."""
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            yield apply_rotation(f.to_ndarray(format="rgb24"), rotation)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["single_face.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov", "turned.mp4"])
def test_same_frames_rate_and_duration_h264(annotated, name):
    _, res = annotated
    src, out, _ = res[name]
    a, b = _stream_facts(src), _stream_facts(out)
    meta = probe(src)
    assert b["codec"] == "h264" and b["pix_fmt"] == "yuv420p"
    assert b["size"] == (meta.width - meta.width % 2, meta.height - meta.height % 2)  # upright
    assert len(b["pts"]) == len(a["pts"]) and b["pts"] == a["pts"] and b["tb"] == a["tb"]
    if name != "face_noface.mov":  # constant rate; the variable-rate file's mean rate follows its own pts
        assert b["rate"] == a["rate"]
    assert abs(b["duration"] - a["duration"]) <= 1.0 / float(a["rate"])
    assert b["audio"] == a["audio"]  # AAC / MP3 copied (the turned copy has none)
    assert not list(out.parent.glob(".*"))  # no temporary file left


def _on_screen(faces: pd.DataFrame, t: float, eps: float):
    start, end = hold_spans(faces, SAMPLE_T)
    return faces[(start <= t + eps) & (end > t + eps)]


def _band(img, x1, y1, x2, y2):
    """The left edge of a box, 2 px either side, over its middle 80 % of height."""
    h = y2 - y1
    return img[int(y1 + 0.1 * h):int(y2 - 0.1 * h), max(int(x1) - 2, 0):int(x1) + 3]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["single_face.mp4", "face_noface.mov", "turned.mp4"])
def test_boxes_drawn_where_faces_are_and_nothing_else_changed(annotated, name):
    _, res = annotated
    src, out, faces = res[name]
    meta = probe(src)
    assert len(faces) > 5
    with av.open(str(src)) as c:
        s = c.streams.video[0]
        tb, start_s = s.time_base, float((s.start_time or 0) * s.time_base)
        stamps = [float(f.pts * tb) - start_s for f in c.decode(s)]
    eps = 0.25 / meta.fps
    # pixels far from every face and label: only compression differs
    far = np.ones((meta.height, meta.width), bool)
    for r in faces.itertuples():
        far[max(int(r.y1) - 60, 0):int(r.y2) + 20, max(int(r.x1) - 20, 0):int(r.x2) + 200] = False
    assert far.mean() > 0.2
    last_box = faces.iloc[-1]
    drawn = empty = 0
    for t, a, b in zip(stamps, _frames(src, meta.rotation), _frames(out)):
        a = a[:b.shape[0], :b.shape[1]].astype(np.int16)
        d = np.abs(a - b.astype(np.int16))
        assert d[far[:b.shape[0], :b.shape[1]]].mean() < 6, t
        shown = _on_screen(faces, t, eps)
        if len(shown):
            drawn += 1
            for r in shown.itertuples():
                assert _band(d, r.x1, r.y1, r.x2, r.y2).mean() > 30, (t, r)
        elif abs(t - faces.timestamp_s).min() > 2 * SAMPLE_T:  # no face near this frame: its old box is gone
            empty += 1
            assert _band(d, last_box.x1, last_box.y1, last_box.x2, last_box.y2).mean() < 6, t
    assert drawn > 0
    if name == "face_noface.mov":  # the face leaves at about 2.4 s of 6.4 s
        assert empty > 50


@pytest.mark.slow
def test_unreadable_video_is_one_line_error(tmp_path, bad_inputs):
    faces = pd.DataFrame()
    for kind in ("not_a_video", "missing", "zero_length", "audio_only"):
        with pytest.raises(ValueError) as e:
            annotate_video(bad_inputs[kind], faces, tmp_path / "a" / "x.mp4")
        assert "\n" not in str(e.value) and str(bad_inputs[kind].name) in str(e.value)
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").iterdir())


@pytest.mark.slow
def test_unknown_video_in_output(annotated):
    out, _ = annotated
    with pytest.raises(ValueError, match="not in the output folder"):
        annotate_from_output(out, VIDEOS / "noface_face.mov")


@pytest.mark.slow
def test_up_to_date_video_is_not_annotated_again_and_copies_are_found_by_content(annotated, tmp_path):
    import shutil

    from fer_pipeline.annotate import _find_video, annotate_if_stale
    from fer_pipeline.store import read_table

    out, res = annotated
    src, _, faces = res["single_face.mp4"]
    vid = faces.video_id.iloc[0]
    assert annotate_if_stale(out, vid) is None  # newer than its faces and videos parts
    copy = shutil.copy(src, tmp_path / src.name)  # analysed under another path: found by its content
    assert _find_video(read_table(out, "videos"), copy)["video_id"] == vid


def test_unwritable_output_is_one_line_output_error(tmp_path):
    from fer_pipeline.errors import OutputError

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OutputError) as e:
        annotate_video(VIDEOS / "single_face.mp4", pd.DataFrame(), tmp_path / "file" / "x.mp4")
    assert "\n" not in str(e.value) and "file" in str(e.value)


def test_stop_request_leaves_nothing(tmp_path):
    from fer_pipeline import interrupt

    interrupt.request_stop()
    try:
        with pytest.raises(interrupt.Interrupted):
            annotate_video(VIDEOS / "single_face.mp4", pd.DataFrame(), tmp_path / "a" / "x.mp4")
    finally:
        interrupt.reset()
    assert list((tmp_path / "a").iterdir()) == []
