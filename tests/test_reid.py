"""Re-identification on real faces: a person who leaves and comes back keeps one viewer id, different people are
never merged, a single viewer stays one, and embeddings are written only when asked."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import VIDEOS, write_video
from fer_pipeline.config import PipelineConfig
from fer_pipeline.models import Models
from fer_pipeline.pipeline import analyze_video
from fer_pipeline.reid import FaceEmbedder, assign_viewers
from fer_pipeline.reid.viewers import _Sample
from fer_pipeline.store import read_table

pytestmark = pytest.mark.slow


def _frames(path: Path, step: int) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][::step]


@pytest.fixture(scope="module")
def cfg():
    return PipelineConfig.load(None, {"output.reports": False})


@pytest.fixture(scope="module")
def models(cfg):
    return Models.load(cfg)


@pytest.fixture(scope="module")
def leave_and_return(tmp_path_factory) -> Path:
    """At 10 fps: the woman of the Pexels clip (4.8 s), an empty background (3 s), the man of single_face.mp4
    (4 s), the background again (3 s), and the woman once more, later in her clip (4.8 s)."""
    woman = _frames(VIDEOS / "WolfgangLanger_Pexels.mp4", 2)
    man = _frames(VIDEOS / "single_face.mp4", 3)
    bg = np.full((360, 640, 3), (90, 110, 100), np.uint8)
    seq = woman[:48] + [bg] * 30 + (man + man[::-1])[:40] + [bg] * 30 + woman[100:148]
    return write_video(tmp_path_factory.mktemp("reid") / "leave-and-return.mp4", np.stack(seq), 10)


def _tracks(out: Path) -> pd.DataFrame:
    f = read_table(out, "faces")
    return f.groupby("track_id").agg(viewer=("viewer_id", "first"), t0=("timestamp_s", "min"),
                                     t1=("timestamp_s", "max"), viewers=("viewer_id", "nunique"))


def test_a_returning_viewer_keeps_her_id_and_the_other_person_is_another(leave_and_return, cfg, models, tmp_path):
    r = analyze_video(leave_and_return, tmp_path, cfg, models)
    assert r["status"] == "ok" and r["viewers"] == 2 and r["tracks"] == 3, r
    tr = _tracks(tmp_path).sort_values("t0")
    assert (tr.viewers == 1).all()  # a track is one viewer
    woman_1, man, woman_2 = tr.viewer.tolist()
    assert woman_1 == woman_2 == 1 and man == 2
    tl = read_table(tmp_path, "timeline")
    assert set(tl.viewer_id) == {1, 2} and (tl.groupby(["viewer_id", "second"]).size() == 1).all()
    assert read_table(tmp_path, "audience").viewers.max() == 1  # never two people at once here
    assert not (tmp_path / "embeddings").exists()  # biometric data: not written unless asked


def test_without_reid_every_track_is_a_viewer(leave_and_return, cfg, tmp_path):
    off = PipelineConfig.load(None, {"output.reports": False, "reid.enabled": False})
    r = analyze_video(leave_and_return, tmp_path, off, Models.load(off))
    assert r["viewers"] == r["tracks"] == 3
    f = read_table(tmp_path, "faces")
    assert (f.viewer_id == f.track_id).all()


def test_a_single_viewer_stays_one(cfg, models, tmp_path):
    r = analyze_video(VIDEOS / "WolfgangLanger_Pexels.mp4", tmp_path, cfg, models)
    assert r["viewers"] == 1


def test_two_people_at_once_are_never_one_viewer(cfg, models, tmp_path):
    """The same man twice side by side (the same face!), then once: overlapping tracks cannot be merged."""
    man = _frames(VIDEOS / "single_face.mp4", 3)
    side = [np.concatenate([f[:, 160:480], f[:, 160:480]], axis=1) for f in man + man[::-1]]
    seq = side + [np.full((360, 640, 3), 100, np.uint8)] * 20 + man
    clip = write_video(tmp_path / "twins.mp4", np.stack(seq), 10)
    r = analyze_video(clip, tmp_path / "out", cfg, models)
    tr = _tracks(tmp_path / "out").sort_values("t0")
    first_two = tr[tr.t0 < 1.0]
    assert len(first_two) == 2 and first_two.viewer.nunique() == 2, tr
    assert r["viewers"] == 2  # the later lone face joins one of them, not a third


def test_saved_embeddings_on_request(leave_and_return, models, tmp_path):
    keep = PipelineConfig.load(None, {"output.reports": False, "output.save_embeddings": True})
    analyze_video(leave_and_return, tmp_path, keep, models)
    emb = pd.read_parquet(tmp_path / "embeddings")
    assert sorted(emb.viewer_id) == [1, 1, 2] and set(emb.backend) == {"dlib"}
    vecs = np.stack(emb.embedding.to_numpy())
    assert vecs.shape == (3, 128) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)


class _Same(FaceEmbedder):
    """Every face the same vector: only the constraints can keep tracks apart."""

    name, dim = "same", 4

    def crops(self, frame, faces):
        return np.zeros((len(faces), 2, 2, 3), np.uint8)

    def embed(self, crops):
        return np.tile(np.array([[1.0, 0, 0, 0]], np.float32), (len(crops), 1))


def _sample(px: float = 80.0, yaw: float = 0.0) -> list[_Sample]:
    return [_Sample(1.0, np.zeros((2, 2, 3), np.uint8), px, yaw)]


def test_constraints_overlap_and_unreliable_samples():
    spans = {1: (0.0, 5.0), 2: (1.0, 4.0), 3: (10.0, 12.0), 4: (20.0, 22.0)}
    samples = {1: _sample(), 2: _sample(), 3: _sample(), 4: _sample(px=12.0)}  # 4: a tiny face
    v = assign_viewers(spans, samples, _Same()).viewer_of
    assert v[1] != v[2]  # overlap: never one viewer, however alike
    assert v[3] in (v[1], v[2])  # identical later face: merged with one of them
    assert v[4] not in (v[1], v[2], v[3])  # unreliable: its own viewer rather than a wrong merge
    assert sorted(set(v.values())) == [1, 2, 3] and v[1] == 1  # numbered by first appearance
    assert assign_viewers(spans, samples, None).viewer_of == {1: 1, 2: 2, 3: 3, 4: 4}


def test_cuts_end_tracks_and_people_keep_their_viewer_across_shots(cfg, models, tmp_path):
    """Edited footage: hard cuts between the woman, the man and the woman again, faces at about the same place in
    the frame (the tracker alone would carry one id across the cuts)."""
    woman = _frames(VIDEOS / "WolfgangLanger_Pexels.mp4", 2)
    man = _frames(VIDEOS / "single_face.mp4", 3)
    seq = woman[:25] + (man + man[::-1])[:25] + woman[100:125]
    clip = write_video(tmp_path / "cuts.mp4", np.stack(seq), 10)
    r = analyze_video(clip, tmp_path / "out", cfg, models)
    tr = _tracks(tmp_path / "out").sort_values("t0")
    assert r["tracks"] == 3 and (tr.t1 - tr.t0 < 2.6).all(), tr  # no track runs across a cut
    assert tr.viewer.tolist() == [1, 2, 1] and r["viewers"] == 2


def test_cut_detector_on_real_frames():
    from fer_pipeline.cuts import CutDetector

    woman = _frames(VIDEOS / "WolfgangLanger_Pexels.mp4", 5)[:8]
    man = _frames(VIDEOS / "single_face.mp4", 5)[:4]
    d = CutDetector()
    assert [d(f) for f in woman + man] == [False] * 8 + [True, False, False, False]
    off = CutDetector(0)
    assert not any(off(f) for f in woman + man)
