"""Atomic writes, content hashes and video ids."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from conftest import VIDEOS
from fer_pipeline import fileutil
from fer_pipeline.fileutil import atomic_write_bytes, atomic_write_text, make_video_id, sha256_file


def test_atomic_write_replaces_whole_and_keeps_mode(tmp_path: Path):
    p = atomic_write_text(tmp_path / "sub" / "r.html", "first")
    assert p.read_text() == "first" and (p.stat().st_mode & 0o777) == 0o644
    os.chmod(p, 0o640)
    atomic_write_bytes(p, b"second")
    assert p.read_bytes() == b"second" and (p.stat().st_mode & 0o777) == 0o640
    assert [f.name for f in p.parent.iterdir()] == ["r.html"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch):
    p = atomic_write_text(tmp_path / "r.html", "old")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileutil.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(p, "new")
    assert p.read_text() == "old" and [f.name for f in tmp_path.iterdir()] == ["r.html"]


def test_sha256_and_video_id_of_a_real_clip():
    clip = VIDEOS / "single_face.mp4"
    digest = sha256_file(clip, chunk=4096)
    assert digest == hashlib.sha256(clip.read_bytes()).hexdigest()
    vid = make_video_id(clip, digest)
    assert vid == f"single-face-{digest[:10]}"
    assert make_video_id("/x/Ünïcode clip (1).MOV", None).startswith("n-code-clip-1-")  # [a-z0-9-] only
    assert make_video_id("/x/!!!.mp4", None).startswith("video-")
