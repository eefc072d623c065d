"""Report thumbnails gathered while a video is analysed: one frame per second of video and the best face crop per
track, as JPEG bytes (frames are gone once their batch is done, so they are taken on the way).

Which of them are saved is decided at the end (:meth:`Thumbnails.files`): the best crop of each viewer (over the
tracks that were kept), and the frames of the seconds the report shows as key moments.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable

import numpy as np

from fer_pipeline.resize import shrink
from fer_pipeline.types import Faces, FrameBatch

logger = logging.getLogger(__name__)

__all__ = ["Thumbnails", "jpeg"]


def jpeg(img: np.ndarray, max_side: int, quality: int = 80) -> bytes:
    """JPEG bytes of an ``(H, W, 3) uint8`` RGB image shrunk to at most ``max_side`` pixels (never enlarged)."""
    from PIL import Image

    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:  # 1.4 ms against 4.7 ms for PIL's thumbnail() on a 720p frame (benchmarks/hotpaths.py)
        img = shrink(img, (max(1, round(w * s)), max(1, round(h * s))))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class Thumbnails:
    """Collects candidate thumbnails batch by batch.

    Per second of video: the first sampled frame, 240 pixels on its long side. Per track: the crop (box plus a
    quarter of its width on each side, 128 pixels) of its largest, most confident face, replaced only by a face at
    least 20% better (area x score), so that a track's thumbnail does not flicker between near-equal faces.
    """

    def __init__(self) -> None:
        self._seconds: dict[int, bytes] = {}
        self._tracks: dict[int, tuple[float, bytes]] = {}

    def add(self, batch: FrameBatch, per_frame: list[Faces]) -> None:
        """Take what this batch offers; ``per_frame[i]`` are the tracked faces of ``batch.frames[i]`` (ids as the
        tracker gave them)."""
        for i, ts in enumerate(batch.timestamp_s):
            sec = int(np.floor(ts))
            if sec not in self._seconds:
                self._seconds[sec] = jpeg(batch.frames[i], 240, 70)
        for i, faces in enumerate(per_frame):
            for k in range(len(faces)):
                tid = int(faces.track_id[k])
                x1, y1, x2, y2 = faces.xyxy[k]
                size = float((x2 - x1) * (y2 - y1)) * float(faces.scores[k])
                if tid not in self._tracks or size > self._tracks[tid][0] * 1.2:
                    pad = 0.25 * (x2 - x1)
                    fr = batch.frames[i]
                    crop = fr[max(0, int(y1 - pad)):int(y2 + pad), max(0, int(x1 - pad)):int(x2 + pad)]
                    if crop.size:
                        self._tracks[tid] = (size, jpeg(crop, 128, 85))

    def prune_seconds(self, keep: Iterable[int], before: int) -> None:
        """Forget the frames of seconds earlier than ``before`` that are not in ``keep`` (a live session keeps only
        the seconds that can still be key moments, so memory does not grow with the stream)."""
        keep = set(keep)
        for sec in [s for s in self._seconds if s < before and s not in keep]:
            del self._seconds[sec]

    def files(self, track_ids: dict[int, int], seconds: Iterable[int],
              viewer_of: dict[int, int] | None = None) -> dict[str, bytes]:
        """The thumbnails to save: ``viewer-<viewer id>.jpg`` for each viewer, its best face over all its tracks
        (``track_ids``: tracker id -> final track id, :attr:`fer_pipeline.track.TrackResult.ids`; ``viewer_of``:
        final track id -> viewer id, each track its own viewer when None), and ``second-<s>.jpg`` for each of
        ``seconds`` that had a sampled frame."""
        best: dict[int, tuple[float, bytes]] = {}
        for raw, v in self._tracks.items():
            final = track_ids.get(raw)
            if final is None:
                continue
            viewer = viewer_of.get(final, final) if viewer_of is not None else final
            if viewer not in best or v[0] > best[viewer][0]:
                best[viewer] = v
        out = {f"viewer-{vid}.jpg": jpg for vid, (_, jpg) in best.items()}
        for sec in seconds:
            if sec in self._seconds:
                out[f"second-{sec}.jpg"] = self._seconds[sec]
        return out
