"""Where the package's data files are: the shipped emotion models and their cards, the report templates, the default
pipeline settings and the vendored plotly.js bundle.

The repository keeps them where the project brief puts them (``models/``, ``reports/templates/``, ``configs/`` at its
root; ``fer_pipeline/static/``); a built wheel carries them inside the package (``pyproject.toml`` maps them to
``fer_pipeline/_models/``, ``_templates/`` and ``_configs/``). Each function below returns the installed copy when there
is one, else the repository's (a clone or an editable install), so the same code runs in both. Nothing is read or
created here: the functions only say where to look, and the caller reports a missing file with its path.
"""

from __future__ import annotations

import functools
from pathlib import Path

__all__ = ["DEFAULT_MODEL_NAME", "PACKAGE_DIR", "configs_dir", "default_config", "default_model", "models_dir",
           "plotly_bundle", "repo_root", "resolve_model", "static_dir", "templates_dir"]

PACKAGE_DIR = Path(__file__).resolve().parent
"""The installed (or checked-out) ``fer_pipeline`` folder."""

DEFAULT_MODEL_NAME = "emotion-fer2013-vgg.onnx"
"""File name of the default emotion model (its card is the ``.json`` of the same stem beside it)."""


@functools.lru_cache(maxsize=1)
def repo_root() -> Path | None:
    """The repository root when the package runs from a checkout (a clone, an editable install), else ``None``: the
    folder above the package holding ``pyproject.toml`` and the package's ``models/`` beside it."""
    root = PACKAGE_DIR.parent
    if (root / "pyproject.toml").is_file() and (root / "models").is_dir():
        return root
    return None


def _locate(packaged: str, in_repo: str) -> Path:
    """``PACKAGE_DIR/packaged`` when it exists (an installed wheel), else ``REPO/in_repo`` in a checkout; the packaged
    path when neither exists (so that an error message names where an installed copy looks)."""
    inside = PACKAGE_DIR / packaged
    if inside.is_dir():
        return inside
    root = repo_root()
    if root is not None and (root / in_repo).is_dir():
        return root / in_repo
    return inside


@functools.lru_cache(maxsize=1)
def models_dir() -> Path:
    """Folder of the shipped emotion models (``*.onnx``) and their cards (``*.json``): ``fer_pipeline/_models/``
    installed, ``models/`` in the repository."""
    return _locate("_models", "models")


@functools.lru_cache(maxsize=1)
def templates_dir() -> Path:
    """Folder of the reports' Jinja2 templates: ``fer_pipeline/_templates/`` installed, ``reports/templates/`` in the
    repository."""
    return _locate("_templates", "reports/templates")


@functools.lru_cache(maxsize=1)
def configs_dir() -> Path:
    """Folder of ``pipeline.yaml``: ``fer_pipeline/_configs/`` installed, ``configs/`` in the repository (which also
    holds the training recipes, ``configs/train/``, not installed)."""
    return _locate("_configs", "configs")


def static_dir() -> Path:
    """Folder of the vendored files (``fer_pipeline/static/``, inside the package in both layouts)."""
    return PACKAGE_DIR / "static"


def default_model() -> Path:
    """The default emotion model, ``emotion-fer2013-vgg.onnx`` in :func:`models_dir`."""
    return models_dir() / DEFAULT_MODEL_NAME


def default_config() -> Path:
    """``pipeline.yaml``: every pipeline setting with its default, a file to copy and edit (``--config FILE``)."""
    return configs_dir() / "pipeline.yaml"


def plotly_bundle() -> Path:
    """plotly.js's vendored "cartesian" bundle (``fer_pipeline/static/plotly-cartesian.min.js``)."""
    return static_dir() / "plotly-cartesian.min.js"


def resolve_model(path: str | Path) -> Path:
    """An emotion model path as given in settings: ``~`` expanded; a relative path that does not exist from the working
    directory is looked up among the shipped models, so ``models/emotion-ferplus-vgg.onnx`` (the repository's
    spelling, as in ``configs/pipeline.yaml``) and ``emotion-ferplus-vgg.onnx`` both name the shipped file in a clone
    and in an installed wheel. Returned unchanged when nothing matches (the model loader then names it)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    root = repo_root()
    candidates = [root / p] if root is not None else []
    parts = p.parts
    if len(parts) > 1 and parts[0] == "models":
        candidates.append(models_dir().joinpath(*parts[1:]))
    elif len(parts) == 1:
        candidates.append(models_dir() / p)
    for c in candidates:
        if c.exists():
            return c
    return p
