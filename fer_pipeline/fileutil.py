"""Small file helpers shared by stages: content hashes, video ids and atomic writes."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """The project's cache folder: ``$FER_PIPELINE_CACHE``, default ``~/.cache/fer-pipeline`` (decoded training sets,
    the CenterFace graph converted for any input size). Everything in it can be rebuilt; it may not exist yet."""
    return Path(os.environ.get("FER_PIPELINE_CACHE", Path.home() / ".cache" / "fer-pipeline"))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in ``chunk``-byte pieces.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, then :func:`os.replace`.

    Creates the parent folder if needed. Readers see the old file or the new one, never a partial one.

    Raises:
        OSError: the folder cannot be created or written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644  # mkstemp creates 0600; reports are shared
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def make_video_id(path: str | Path, sha256: str | None) -> str:
    """Readable, stable id of a video: ``<slug>-<10 hex>``, from the file name and the file's bytes.

    ``slug``: the file name without its extension, lower-cased, every run of characters other than ``a-z0-9``
    replaced by one ``-``, at most 40 characters (``video`` when nothing is left). ``10 hex``: the first 10 hex
    digits of the sha256 of the file's bytes (``sha256``).

    So the id depends on the name and the content, not on the folder, the extension or the file's dates: the same
    bytes under ``a/My Clip.mp4`` and ``b/my_clip.MOV`` get the same id (the skip rule reuses one for the other),
    while a copy under another name, or an edited file, gets a new id and is analysed as another video. Without a
    hash (unreadable file) the digits come from the absolute path. Only ``[a-z0-9-]`` are used, so the id is safe in
    folder names, URLs and HTML.

    Args:
        path: the video file (only its name is used when ``sha256`` is given).
        sha256: hex sha256 of its bytes (:func:`sha256_file`), or ``None``.
    """
    stem = Path(str(path)).stem.lower()
    slug = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")[:40].strip("-") or "video"
    if not sha256:
        sha256 = hashlib.sha256(str(Path(str(path)).absolute()).encode()).hexdigest()
    return f"{slug}-{sha256[:10]}"


def model_or_pack(model_path: str | Path | None, pack: str | None, root: str | Path, what: str,
                  error: type[Exception], example: str) -> tuple[Path | None, Path | None]:
    """An InsightFace-style model location: ``(model file, None)`` when ``model_path`` is given (it must be an
    existing ``.onnx``), else ``(None, pack folder)`` (``root/pack``, which must exist; ``~`` expanded). ``what``
    names the model in messages ("InsightFace detection model"), ``example`` the file to give (``"a det_*.onnx
    file"``).

    Raises:
        error: the file or pack is missing, or neither is given (the message names the path looked at).
    """
    if model_path is not None:
        p = Path(model_path).expanduser()
        if not p.is_file():
            raise error(f"{what} not found: {p}")
        if p.suffix.lower() != ".onnx":
            raise error(f"{what} must be an .onnx file: {p}")
        return p, None
    if not pack:
        raise error(f"no {what} configured: give model_path= ({example}) or pack= (an InsightFace model-pack folder "
                    "under root, e.g. 'buffalo_l')")
    folder = Path(root).expanduser() / pack
    if not folder.is_dir():
        raise error(f"InsightFace model pack not found: {folder} (model packs are not downloaded by this pipeline; "
                    "unpack one there)")
    return None, folder
