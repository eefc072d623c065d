"""Which files a run analyses: files and folders given on the command line expanded into a list of inputs."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["VIDEO_EXTENSIONS", "list_videos"]

VIDEO_EXTENSIONS = {".mp4", ".mov", ".m4v", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}


def list_videos(paths: list[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of input files.

    Folders are scanned recursively for files with a video extension (see ``VIDEO_EXTENSIONS``, any case), following
    symbolic links to files; a link whose target is missing is kept, so that it gets a ``failed`` row ("file not
    found"). Skipped in folders: hidden files and folders (names starting with "."), folders whatever their name
    (``x.mp4/`` is scanned as a folder), and other files. Files named explicitly are kept whatever their extension
    (so a bad file given by name gets a ``failed`` row), and so are missing paths (they fail cleanly later).
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in VIDEO_EXTENSIONS
                          and (f.is_file() or (f.is_symlink() and not f.exists()))
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        else:
            out.append(p)
    seen: set[Path] = set()
    uniq = []
    for f in out:
        key = f.absolute()
        if key not in seen:
            seen.add(key)
            uniq.append(f)
    return uniq
