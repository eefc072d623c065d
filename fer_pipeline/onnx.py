"""The one place ONNX Runtime sessions are made: execution-provider choice and session options for every model.

Every ONNX model of the package goes through here: the emotion model (:mod:`fer_pipeline.classify`), CenterFace
(:mod:`fer_pipeline.detect.centerface`), the int8 / export checks of :mod:`fer_pipeline.training.export`, and, for the
InsightFace backend (whose sessions the ``insightface`` package builds itself), the provider list of
:func:`providers`. One ``device`` setting (``"auto"``, ``"cpu"`` or ``"cuda"``) therefore means the same for all.

Session options are those the models were tuned with (``benchmarks/``): full graph optimisation
(``ORT_ENABLE_ALL``, which is also ONNX Runtime's own default) unless ``optimize=False`` (``ORT_DISABLE_ALL``, for
reading metadata only), ``intra_op_num_threads`` left to ONNX Runtime when ``threads`` is 0, and log severity 3
(errors only: CenterFace carries unused BatchNorm initialisers that ONNX Runtime warns about on every load).

The module is named after the format; inside the package ``import onnx`` still finds the ``onnx`` package
(absolute imports), but do not run a file of this folder as a script (``python fer_pipeline/x.py``), which would put
this file first on ``sys.path`` under that name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fer_pipeline.errors import one_line

if TYPE_CHECKING:
    import onnxruntime as ort

logger = logging.getLogger(__name__)

__all__ = ["CPU", "CUDA", "DEVICES", "SessionError", "metadata", "on_gpu", "providers", "select_providers",
           "session", "session_options"]

#: Execution-provider names of ONNX Runtime.
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Accepted ``device`` values: ``auto`` (CUDA when this ONNX Runtime build has it, else CPU), ``cpu``, ``cuda``
#: (required: an error when missing).
DEVICES = ("auto", "cpu", "cuda")


class SessionError(RuntimeError):
    """ONNX Runtime cannot build a session for a model (unreadable or invalid file, unsupported operator). The
    message is one line and names the model."""


def select_providers(available: Sequence[str], device: str = "auto") -> list[str]:
    """Execution providers for ``device``, given what this ONNX Runtime build offers.

    Args:
        available: ``onnxruntime.get_available_providers()`` (any order; only CUDA's presence matters).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cuda"`` (required) or ``"cpu"``.

    Returns:
        providers in priority order, always ending with ``CPUExecutionProvider``:
        ``[CUDA, CPU]`` or ``[CPU]``.

    Raises:
        ValueError: ``device`` is not one of :data:`DEVICES`, or ``device="cuda"`` and ``available`` has no
            ``CUDAExecutionProvider``.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    has_cuda = CUDA in available
    if device == "cuda" and not has_cuda:
        raise ValueError("device=cuda but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    if device != "cpu" and has_cuda:
        return [CUDA, CPU]
    return [CPU]


def providers(device: str = "auto") -> list[str]:
    """:func:`select_providers` on this process's ONNX Runtime (``onnxruntime.get_available_providers()``).

    Raises:
        ValueError: see :func:`select_providers`.
    """
    import onnxruntime as ort

    return select_providers(ort.get_available_providers(), device)


def session_options(threads: int = 0, optimize: bool = True) -> ort.SessionOptions:
    """The ``SessionOptions`` every model of the package runs with.

    Args:
        threads: ``intra_op_num_threads`` (CPU threads of one ``run()``); 0 leaves ONNX Runtime's default (one per
            physical core).
        optimize: ``True``: ``ORT_ENABLE_ALL`` (all graph optimisations: constant folding, BatchNorm folded into
            convolutions, layout changes); ``False``: ``ORT_DISABLE_ALL`` (quickest to build, for reading metadata).

    Raises:
        ValueError: ``threads < 0``.
    """
    import onnxruntime as ort

    if int(threads) < 0:
        raise ValueError(f"threads must be >= 0, got {threads!r}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.log_severity_level = 3
    return opts


def _describe(model: str | Path | bytes) -> str:
    return f"<{len(model)} bytes of ONNX>" if isinstance(model, (bytes, bytearray)) else str(model)


def session(model: str | Path | bytes, device: str = "auto", threads: int = 0, optimize: bool = True,
            name: str | None = None) -> ort.InferenceSession:
    """Build an ``onnxruntime.InferenceSession`` with the package's options and providers.

    Args:
        model: an ``.onnx`` file, or a serialised ``ModelProto`` (bytes).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; see :func:`select_providers`.
        threads: intra-op threads, 0 = ONNX Runtime's default; see :func:`session_options`.
        optimize: full graph optimisation (default) or none; see :func:`session_options`.
        name: how error messages name the model (default: the path, or the byte count).

    Returns:
        the session; ``session.get_providers()[0]`` is the provider that runs it.

    Raises:
        ValueError: bad ``device`` or ``threads``; ``device="cuda"`` without a CUDA provider, or with one that did
            not start (ONNX Runtime would silently run on the CPU).
        SessionError: ONNX Runtime cannot load the model (not a readable ONNX file, unsupported operator...).
    """
    import onnxruntime as ort

    chosen = providers(device)
    opts = session_options(threads, optimize)
    what = name or _describe(model)
    src = bytes(model) if isinstance(model, (bytes, bytearray)) else str(model)
    try:
        sess = ort.InferenceSession(src, sess_options=opts, providers=chosen)
    except Exception as e:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph / RuntimeError types
        raise SessionError(f"{what}: onnxruntime cannot load it: {one_line(e)}") from e
    if device == "cuda" and sess.get_providers()[0] != CUDA:
        raise ValueError(f"{what}: device=cuda but onnxruntime could not start CUDA (running on "
                           f"{sess.get_providers()[0]}); check the CUDA/cuDNN libraries onnxruntime-gpu needs")
    logger.debug("session for %s on %s (threads=%s, optimize=%s)", what, sess.get_providers()[0], threads or "ort",
                 optimize)
    return sess


def on_gpu(sess: ort.InferenceSession) -> bool:
    """Whether ``sess`` runs on CUDA (its first provider)."""
    return sess.get_providers()[0] == CUDA


def metadata(model: str | Path | bytes) -> dict[str, str]:
    """The model's ONNX ``metadata_props`` as a dict, read by ONNX Runtime on an unoptimised CPU session (5-20 ms;
    importing the ``onnx`` package for it took 0.08 s of every start-up).

    Raises:
        SessionError: ONNX Runtime cannot read the model.
    """
    sess = session(model, device="cpu", optimize=False)
    return dict(sess.get_modelmeta().custom_metadata_map)
