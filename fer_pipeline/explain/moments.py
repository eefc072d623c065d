"""Faces of the key moments, kept while a video is analysed, and their occlusion maps for the report.

Frames are gone once their batch is done, and the key moments are known only at the end of a video, so while
decoding :class:`MomentCrops` keeps the aligned crop (the emotion model's own crop: 48x48 gray, 2.3 kB) of each
track's first face in every second. At the end the crops of the chosen seconds are explained with occlusion
sensitivity (:mod:`fer_pipeline.explain.occlusion`) by :func:`explain_moments`, which returns the files the report
shows under each key moment (``report.explain: true``, off by default):

- ``explain-<second>-<viewer>.png``: the heatmap over the aligned crop, 144 pixels square (3x the crop);
- ``explain.json``: ``[{"second", "viewer_id", "file", "label", "p", "regions": {upper, middle, lower}}, ...]``, the
  class each map explains (the predicted one), its probability and the share of positive importance per third of
  the crop (:mod:`fer_pipeline.explain.regions`).

Memory: 2.3 kB per face and second of video while it is analysed (an hour with 3 viewers: 25 MB), freed at the end.
Cost: 1 + 121 forward passes per face explained (8 px patch, 4 px stride): about 0.2 s of one core per face with
the shipped model (measured with a training run beside it).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping

import numpy as np

from fer_pipeline.explain.regions import REGIONS

__all__ = ["EXPLAIN_INDEX", "MomentCrops", "explain_moments"]

#: The file of :func:`explain_moments` that lists the maps (in the video's thumbnail folder).
EXPLAIN_INDEX = "explain.json"

#: Side of the heatmap images in the report, pixels (the 48-pixel crop enlarged 3x, bicubic).
PNG_SIDE = 144


class MomentCrops:
    """The aligned crop of each track's first face in every second of a video, gathered batch by batch.

    Args:
        template: ``(5, 2) float`` landmark template of the crop, pixels (the emotion model's).
        input_hw: ``(height, width)`` of the crop, pixels.
        color: ``"gray"`` or ``"rgb"``.
    """

    def __init__(self, template: np.ndarray, input_hw: tuple[int, int], color: str) -> None:
        self.template = np.asarray(template, np.float32)
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.gray = color == "gray"
        self._firsts: dict[int, dict[int, tuple[float, np.ndarray]]] = {}  # second -> tracker id -> (ts, crop)

    def add(self, batch, per_frame) -> None:
        """Take the crops this batch offers.

        Args:
            batch: :class:`fer_pipeline.types.FrameBatch` (frames ``(N, H, W, 3) uint8`` RGB, ``timestamp_s``).
            per_frame: ``per_frame[i]`` the tracked :class:`fer_pipeline.types.Faces` of ``batch.frames[i]`` (ids as
                the tracker gave them, landmarks in frame pixels).
        """
        from fer_pipeline.align import align_faces

        for i, f in enumerate(per_frame):
            if not len(f):
                continue
            ts = float(batch.timestamp_s[i])
            seen = self._firsts.setdefault(int(np.floor(ts)), {})
            new = [k for k in range(len(f)) if int(f.track_id[k]) not in seen]
            if new:
                crops = align_faces(batch.frames[i], f.landmarks[new], self.template, self.input_hw, self.gray)
                for k, crop in zip(new, crops):
                    seen[int(f.track_id[k])] = (ts, crop)

    def select(self, seconds: Iterable[int], track_ids: Mapping[int, int],
               viewer_of: Mapping[int, int] | None = None) -> tuple[list[tuple[int, int, float, np.ndarray]], int]:
        """The faces of ``seconds``: one per viewer (or track) seen in each, its first in that second.

        Args:
            seconds: whole seconds of the video.
            track_ids: tracker id -> final track id (:attr:`fer_pipeline.track.TrackResult.ids`; faces of tracks
                it drops are left out).
            viewer_of: final track id -> viewer id; each track is its own viewer when None.

        Returns:
            ``([(second, id, timestamp_s, crop), ...] sorted by second then id, number of seconds without a face)``.
        """
        out, empty = [], 0
        for s in sorted(set(int(x) for x in seconds)):
            best: dict[int, tuple[float, np.ndarray]] = {}
            for raw, (ts, crop) in self._firsts.get(s, {}).items():
                tid = track_ids.get(raw)
                if tid is None:
                    continue
                key = viewer_of.get(tid, tid) if viewer_of is not None else tid
                if key not in best or ts < best[key][0]:
                    best[key] = (ts, crop)
            if not best:
                empty += 1
            out.extend((s, k, best[k][0], best[k][1]) for k in sorted(best))
        return out, empty


def _png(rgb: np.ndarray, side: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).resize((side, side), Image.Resampling.BICUBIC).save(
        buf, format="PNG", optimize=True)
    return buf.getvalue()


def explain_moments(crops: MomentCrops, seconds: Iterable[int], track_ids: Mapping[int, int],
                    viewer_of: Mapping[int, int] | None, emotion) -> dict[str, bytes]:
    """Occlusion maps of the key-moment faces, as the files the report shows.

    Args:
        crops: the crops gathered over the video.
        seconds: the seconds to explain (the report's key moments).
        track_ids, viewer_of: as for :meth:`MomentCrops.select`.
        emotion: the :class:`fer_pipeline.classify.EmotionModel` that classified the video (the maps explain its
            predicted class for each face).

    Returns:
        ``{file name: bytes}``: ``explain-<second>-<viewer>.png`` per face and :data:`EXPLAIN_INDEX` (see the module
        docstring); empty when no face was seen in those seconds.
    """
    from fer_pipeline.explain.occlusion import OcclusionExplainer
    from fer_pipeline.explain.regions import region_shares
    from fer_pipeline.explain.render import overlay

    faces, _ = crops.select(seconds, track_ids, viewer_of)
    if not faces:
        return {}
    batch = np.stack([c for *_, c in faces])
    maps, probs = OcclusionExplainer(emotion).explain(batch)
    shares = region_shares(maps)
    labels = list(emotion.labels)
    files: dict[str, bytes] = {}
    index = []
    for (s, vid, ts, crop), m, p, sh in zip(faces, maps, probs, shares):
        name = f"explain-{s}-{vid}.png"
        files[name] = _png(overlay(crop, m), PNG_SIDE)
        k = int(np.argmax(p))
        index.append({"second": s, "viewer_id": int(vid), "timestamp_s": round(ts, 3), "file": name,
                      "label": labels[k], "p": round(float(p[k]), 4),
                      "regions": None if np.isnan(sh).any() else {r: round(float(v), 4) for r, v in zip(REGIONS, sh)}})
    files[EXPLAIN_INDEX] = (json.dumps(index, indent=1) + "\n").encode()
    return files
