"""Decode stage: a video file -> metadata and a stream of batches of sampled, upright RGB frames.

Contract
--------
``probe(path)`` returns a :class:`~fer_pipeline.types.VideoMeta` (duration in seconds, average frame rate in Hz,
width/height of the frames *as delivered*, i.e. after rotation, the container's clockwise rotation, frame count).

``iter_batches(path, cfg)`` (``cfg``: a :class:`~fer_pipeline.config.DecodeConfig`, its defaults when ``None``)
yields :class:`~fer_pipeline.types.FrameBatch` objects:

* ``frames``: ``(B, H, W, 3) uint8`` **RGB**, upright (the container's display rotation is applied, so ``H, W`` are
  ``meta.height, meta.width``), with ``1 <= B <= cfg.batch_size``. Memory is bounded by ``batch_size`` frames, never
  by the video length: frames are decoded as a stream.
* ``frame_index``: ``(B,) int64``, 0-based index of the frame in the decoded stream (presentation order), increasing.
* ``timestamp_s``: ``(B,) float64``, presentation time in seconds taken from the container's pts (not
  ``index / fps``, so variable frame rate is handled), relative to the video stream's start time (the first frame of
  a normal file is at 0.0), strictly increasing.

``iter_batches_in_process(path, cfg)`` yields the same batches, decoded by a child process (the pipeline's default,
``decode.process``); ``prestart(path, cfg)`` starts that process ahead of time and returns a :class:`Prestarted` that
the caller owns (see :mod:`fer_pipeline.decode.process`).

Sampling rule (identical for both backends): walk the frames in presentation order and keep a frame when its
timestamp reaches the next tick ``k / sample_fps`` (``k = 0, 1, 2, ...``); after keeping a frame the tick advances to
the first one strictly after that frame's timestamp. The output rate is therefore at most ``sample_fps`` and is
correct for variable frame rate. ``sample_fps=None`` or ``<= 0`` keeps every frame (:func:`select_sample_indices`;
``DecodeConfig`` itself requires ``sample_fps > 0``). Comparisons use a tolerance of
:data:`~fer_pipeline.decode.sampling.TICK_EPS_S` (0.1 ms) so float rounding of timestamps (decord reports float32)
cannot change which frame is kept.

Skipping (PyAV, ``skip_nonref=True``, the default): H.264/HEVC must decode every *reference* frame to reach the
sampled ones, but a non-reference frame (most B-frames) is needed by no other frame. The decoder is therefore told,
packet by packet, to skip non-reference frames except those whose pts lies within one nominal frame interval
(``1 / meta.fps``) after a sampling tick, which are the only frames the rule above can keep on a constant-rate
stream: the kept frames, indices and timestamps are exactly those of a full decode, for 22-37% less decode CPU on
720p30 and 1080p30 x264 files at 5 Hz (``benchmarks/README.md``). On variable frame rate, a tick whose first frame
lies beyond that window gets the next decoded frame instead (a few frames later at most); its timestamp is still
its own pts. ``frame_index`` is then derived from pts: the number of the stream's packets (all of them, decoded or
skipped, but not those the demuxer marks discard) whose pts is lower than the frame's, i.e. its rank in
presentation order. Skipping is off when ``sample_fps`` keeps every frame or is not below the stream's frame rate,
and for decord.

Threads and deblocking (PyAV): with ``threads=0`` (the pipeline's default) a file of closed GOPs is split at
keyframes into chunks of at least 1 s (:mod:`fer_pipeline.decode.chunk_plan`) that single-threaded decoders, one per
core, decode side by side (:mod:`fer_pipeline.decode.chunks`): the kept frames are planned from the packets' pts
with the rule above, so frames, indices, timestamps and pixels are exactly those of a sequential decode (and on
variable frame rate exactly the rule's frames, where sequential skipping may deliver a later one). Decode-only of the
10-minute 720p30 benchmark file: 41.7 s in chunks on 2 cores against 78.1 s on one thread (`benchmarks/README.md`).
Files that cannot be split (open GOPs, a single keyframe, packets without pts) are decoded sequentially with FFmpeg's
frame threads (:mod:`fer_pipeline.decode.pyav`); ``threads=1`` decodes sequentially on the calling thread.
``skip_loop_filter`` trades exactness for decode CPU (22% less decode-only CPU with ``"all"``; 43-60 dB PSNR against
the exact frames, 95-100% of the faces' emotions unchanged); off by default because the whole pipeline was not
measurably faster with it.

Anchor frames (PyAV, chunked decoding, ``snap_to_anchors=True``, the pipeline's default ``decode.snap_to_anchors``):
most H.264/HEVC files from x264/x265 and phones reorder frames: B-frames are shown before a P-frame that is decoded
first. About three frames in four of the 720p30 benchmark file are B-frames, and skipping only the non-reference ones
still leaves the reference B-frames to decode. With snapping, a sample that the rule puts on a reordered frame takes
the nearest *anchor* (a frame no earlier-decoded frame is shown after: an I- or P-frame) within half a sampling
interval of its tick instead (at 30 fps and 5 Hz with x264's usual three B-frames: at most two frames away), so the
chunk decoders can skip every B-frame (``skip_frame="BIDIR"`` on their packets). Timestamps and indices stay those of
the frames delivered. Whether that is safe depends on the encoder: if an I/P-frame is predicted from a B-frame,
skipping B-frames corrupts it. So before any frame is delivered, two threads decode the first chunk's first 16
anchors both ways and compare their pixels (luma digests); only if every one is bit-identical are B-frames skipped
and the snapped samples delivered, otherwise the file is decoded exactly and delivers the exact rule's samples. Of the
shared clips, the iPhone HEVC ones pass and the Pexels x264 one (B-pyramid, several references) does not; the
benchmark files (x264 veryfast, OBS's default preset) pass: decode-only of the 1-minute 720p file takes 30% less CPU
(``benchmarks/README.md``). Sequential decoding (``threads=1``, files that cannot be split) never snaps. Without
reordered frames (most webcam and real-time encoders) there is nothing to skip and nothing moves.

Backends: ``"pyav"`` (the pipeline's default: decodes the frames as above, converts only kept frames to RGB) and
``"decord"`` (:mod:`fer_pipeline.decode.decord_backend`: indexes the file, picks the kept indices from
``get_frame_timestamp`` and decodes them per chunk with ``get_batch``). Measured on a 10-minute 720p30 file at 5 Hz
(2-core CPU, the other core busy): PyAV decoded 387 s of video in 47 s at 198 MB peak RSS, decord in 83 s at 748 MB,
so the pipeline defaults to PyAV and keeps decord selectable. The rotation always comes from :func:`probe` (PyAV
reads the display matrix) and is applied as the frames are stacked into their batch (the same pixels as
:func:`apply_rotation`). :func:`iter_batches` logs a warning and uses PyAV instead of decord when decord cannot open
a file that PyAV can, and for every rotated file: decord 0.6 mishandles display matrices (it flips 180-degree files
itself and returns 4-channel buffers of the wrong size, turned the same way, for both 90 and 270).

Errors: every problem with the input raises :class:`VideoError` (a ``ValueError``) with a one-line reason naming the
path, e.g. ``"file not found: x.mp4"``, ``"empty file (0 bytes): z.mp4"``, ``"not a video file: x.txt"``,
``"no video stream (audio-only): a.m4a"``, ``"cannot decode (corrupt or truncated): y.mp4: <cause>"``. Decode
errors in the middle of a stream raise as well; a stream is never silently truncated.

Modules, each importing only those before it: ``errors`` (VideoError, truncation check), ``sampling`` (the rule,
pts index, anchor snapping), ``buffers`` (stacking, rotation), ``decord_backend``, ``container`` (opening,
validation, :func:`probe`), ``pyav`` (sequential decoding), ``chunk_plan`` and ``chunks`` (chunked decoding),
``iterate`` (:func:`iter_batches`), ``process`` (the decode process, parent side) and ``child`` (its child side, run
as ``python -m fer_pipeline.decode.child``, never imported here).
"""

from __future__ import annotations

from fer_pipeline.decode.ahead import decode_ahead, prefetch
from fer_pipeline.decode.buffers import BatchBuffers, apply_rotation
from fer_pipeline.decode.container import BACKENDS, probe
from fer_pipeline.decode.errors import VideoError
from fer_pipeline.decode.iterate import iter_batches
from fer_pipeline.decode.process import (
    Prestarted,
    StartError,
    available,
    iter_batches_in_process,
    prestart,
)
from fer_pipeline.decode.sampling import select_sample_indices

__all__ = ["BACKENDS", "BatchBuffers", "Prestarted", "StartError", "VideoError", "apply_rotation", "available",
           "decode_ahead", "iter_batches", "iter_batches_in_process", "prefetch", "prestart", "probe",
           "select_sample_indices"]
