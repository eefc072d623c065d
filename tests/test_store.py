"""Storage: declared schemas, Hive partitions readable by pandas, atomic commit, stable readable ids."""
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fer_pipeline.aggregate import audience, timeline
from fer_pipeline.store import VideoWriter, make_video_id, read_table, read_video_row

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def _tables(seed):
    rng = np.random.default_rng(seed)
    n = 20
    p = rng.dirichlet(np.ones(7), size=n).astype(np.float32)
    faces = pd.DataFrame({"frame_index": np.arange(n) * 6, "timestamp_s": np.arange(n) * 0.2,
                          "track_id": np.ones(n, np.int64), "viewer_id": np.ones(n, np.int64), "x1": 1.0, "y1": 2.0, "x2": 30.0, "y2": 40.0,
                          "det_score": np.float32(0.9)})
    for j, lab in enumerate(LABELS):
        faces[f"p_{lab}"] = p[:, j]
    faces["emotion"] = np.asarray(LABELS)[p.argmax(1)]
    pose = rng.uniform(-40, 40, (n, 3)).astype(np.float32)
    faces["yaw"], faces["pitch"], faces["roll"] = pose.T
    faces["attentive"] = (np.abs(pose[:, 0]) <= 30) & (np.abs(pose[:, 1]) <= 25)
    tl = timeline(faces, LABELS)
    return faces, tl, audience(tl, LABELS, 4.0)


def _row(path):
    return {"path": str(path), "sha256": "ab" * 32, "status": "ok", "error": None, "duration_s": 4.0, "fps": 30.0,
            "width": 640, "height": 360, "frames_sampled": 20, "faces_detected": 20, "tracks": 1,
            "processing_s": 1.0, "emotion_model": "m", "detector": "centerface", "pipeline_version": "0",
            "created_at": dt.datetime.now(dt.timezone.utc)}


def test_round_trip_two_videos(tmp_path):
    for i, vid in enumerate(["a-0000000000", "b-1111111111"]):
        w = VideoWriter(tmp_path, vid, LABELS, {"model_sha256": "x"})
        faces, tl, au = _tables(i)
        w.write("faces", faces)
        w.write("timeline", tl)
        w.write("audience", au)
        w.commit(_row(f"/v/{vid}.mp4"))
    tl = pd.read_parquet(tmp_path / "timeline")
    assert set(tl["video_id"].astype(str)) == {"a-0000000000", "b-1111111111"}
    assert list(tl.columns[:5]) == ["video_id", "track_id", "viewer_id", "second", "n_samples"]
    # a part file passed around on its own says which video it is, and what its columns mean
    import pyarrow as pa
    import pyarrow.parquet as pq

    part = pq.read_table(tmp_path / "timeline" / "video_id=a-0000000000" / "part-0.parquet")
    assert set(part.column("video_id").to_pylist()) == {"a-0000000000"}
    assert pa.types.is_dictionary(part.schema.field("emotion").type)
    assert b"[-1, 1]" in part.schema.field("valence").metadata[b"description"]
    assert b"probability of happy" in part.schema.field("p_happy").metadata[b"description"]
    vids_file = pq.read_table(tmp_path / "videos" / "video_id=b-1111111111" / "part-0.parquet")
    assert pa.types.is_dictionary(vids_file.schema.field("status").type)
    assert isinstance(tl["emotion"].dtype, pd.CategoricalDtype)  # pandas users get categories
    assert read_table(tmp_path, "timeline")["emotion"].dtype == object  # the library's readers: plain strings
    vids = read_table(tmp_path, "videos")
    assert sorted(vids.video_id) == ["a-0000000000", "b-1111111111"] and set(vids.status) == {"ok"}
    assert not (tmp_path / ".staging").exists()
    import pyarrow.parquet as pq
    md = pq.read_schema(next((tmp_path / "faces").rglob("*.parquet"))).metadata
    assert md[b"model_sha256"] == b"x"


def test_schema_mismatch_raises_and_nothing_is_visible(tmp_path):
    w = VideoWriter(tmp_path, "a-0000000000", LABELS)
    faces, tl, _ = _tables(0)
    w.write("faces", faces)
    with pytest.raises(ValueError, match="missing"):
        w.write("timeline", tl.drop(columns=["valence"]))
    w.abort()
    assert not (tmp_path / "faces").exists() and read_video_row(tmp_path, "a-0000000000") is None


def test_commit_replaces_previous_result(tmp_path):
    faces, tl, au = _tables(0)
    w = VideoWriter(tmp_path, "a-0000000000", LABELS)
    w.write("faces", faces), w.write("timeline", tl), w.write("audience", au)
    w.commit(_row("/v/a.mp4"))
    w = VideoWriter(tmp_path, "a-0000000000", LABELS)  # now it failed: only the videos row remains
    w.commit({**_row("/v/a.mp4"), "status": "failed", "error": "boom"})
    assert read_video_row(tmp_path, "a-0000000000")["status"] == "failed"
    assert not (tmp_path / "faces" / "video_id=a-0000000000").exists()


def test_video_id_readable_stable_and_safe():
    a = make_video_id("/x/My Clip (1).MP4", "0123456789abcdef")
    assert a == "my-clip-1-0123456789"
    assert make_video_id("/y/My Clip (1).MP4", "0123456789abcdef") == a
    evil = make_video_id("<img src=x onerror=alert(1)>.mp4", "f" * 64)
    assert set(evil) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert make_video_id("/nope/missing.mp4", None).startswith("missing-")
