"""Child process for one measurement of our pipeline (``benchmarks/run.py`` starts one per input and per mode, so
peak RSS is per run). Prints one JSON object on the last stdout line.

    .venv/bin/python benchmarks/_child.py ours VIDEO OUT_DIR      # analyze_video + render_all, default PipelineConfig
    .venv/bin/python benchmarks/_child.py decode VIDEO pyav|decord  # iter_batches(sample_fps=5, batch_size=16) only

The decode-only mode decodes as the pipeline does by default (``PipelineConfig().decode``: PyAV skips non-reference
frames it cannot sample, chunks decoded in parallel, one thread per core); ``FER_BENCH_DECODE_SKIP=0`` decodes every
frame instead, and ``FER_BENCH_OVERRIDES`` (e.g. ``{"decode.threads": 1}``) changes the decode settings as for
``ours``.

Stage times come from the pipeline itself (``analyze_video``'s ``stage_s``, :class:`fer_pipeline.stages.StageTimes`),
printed as ``*_s`` keys for run.py:

* ``decode_wait_s``: time the stage loop spent waiting for the next decoded batch (decoding runs ahead in a child
  process, or in a thread with ``{"decode.process": false}``; a large wait means decoding is the bottleneck).
* ``thumbnails_s``: gathering and JPEG-encoding report thumbnails.
* ``hash_s``: sha256 of the input file (``analyze_video`` hashes every file for its ``video_id``).

As the CLI does, the video's decode process is started (``pipeline.start_decoding_ahead``) before the models load;
``FER_BENCH_PRESTART=0`` starts it inside ``analyze_video`` instead.

The configuration is ``PipelineConfig()`` (every default), except the emotion model when ``FER_BENCH_MODEL`` is set
and the dotted overrides in ``FER_BENCH_OVERRIDES`` (JSON, e.g. ``{"decode.backend": "pyav"}``).
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time

T0 = time.perf_counter()


def _rusage() -> dict:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"maxrss_mb": round(ru.ru_maxrss / 1024.0, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 3)}


def _config():
    """``PipelineConfig()`` with the dotted overrides of ``FER_BENCH_OVERRIDES`` (run.py ``--variant``) and the
    emotion model of ``FER_BENCH_MODEL`` (run.py ``--model``); every default when neither is set."""
    from fer_pipeline.config import PipelineConfig

    overrides = json.loads(os.environ.get("FER_BENCH_OVERRIDES") or "{}")
    model = os.environ.get("FER_BENCH_MODEL")
    if model:
        overrides["classify.model"] = model
    return PipelineConfig.load(overrides=overrides) if overrides else PipelineConfig()


def run_ours(video: str, out_dir: str) -> dict:
    import fer_pipeline.pipeline as pl

    t_import = time.perf_counter()
    cfg = _config()
    prestarted = None
    if os.environ.get("FER_BENCH_PRESTART", "1") != "0":
        prestarted = pl.start_decoding_ahead(video, cfg)  # as the CLI does: it decodes while the models load
    models = pl.Models.load(cfg)
    t_loaded = time.perf_counter()
    try:
        res = pl.analyze_video(video, out_dir, cfg, models, prestarted=prestarted)
    finally:
        if prestarted is not None:
            prestarted.close()  # ends it if analyze_video did not take it over
    t_analyzed = time.perf_counter()
    # imported after the analysis, as flows/analyze.py does
    from fer_pipeline.report import render_all

    written = render_all(out_dir)
    t_reported = time.perf_counter()
    if res.get("status") != "ok":
        raise RuntimeError(f"analyze_video status {res.get('status')}: {res.get('error')}")
    keys = ("status", "duration_s", "fps", "width", "height", "processing_s", "frames_sampled", "faces_detected",
            "tracks", "emotion_model", "detector", "stage_s")
    return {
        "import_s": round(t_import - T0, 3),
        "load_models_s": round(t_loaded - t_import, 3),
        "analyze_s": round(t_analyzed - t_loaded, 3),
        "report_s": round(t_reported - t_analyzed, 3),
        "reports_written": len(written),
        "crop_frames": getattr(models.detector, "n_crop_frames", None),  # frames detected on face crops
        **{f"{k}_s": res["stage_s"][k] for k in ("decode_wait", "thumbnails", "hash")},
        # peak RSS of the decode process (None when decoding ran in this process), shared batch slots included
        "decoder_peak_rss_mb": res.get("decoder_peak_rss_mb"),
        "result": {k: res.get(k) for k in keys},
        "config": cfg.model_dump(mode="json"),
    }


def run_decode(video: str, backend: str) -> dict:
    from fer_pipeline.decode import iter_batches, probe

    t_import = time.perf_counter()
    dc = _config().decode
    meta = probe(video)
    n = 0
    t = time.perf_counter()
    skip = os.environ.get("FER_BENCH_DECODE_SKIP", "1") != "0"
    for batch in iter_batches(video, dc.model_copy(update={"sample_fps": 5.0, "batch_size": 16, "backend": backend,
                                                           "skip_nonref": skip})):
        n += len(batch)
    t_end = time.perf_counter()
    return {"import_s": round(t_import - T0, 3), "decode_s": round(t_end - t, 3), "frames": n,
            "duration_s": meta.duration_s, "backend": backend, "skip_nonref": skip, "threads": dc.threads,
            "skip_loop_filter": dc.skip_loop_filter, "snap_to_anchors": dc.snap_to_anchors}


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("ours", "decode"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, video, arg = argv
    out = run_ours(video, arg) if mode == "ours" else run_decode(video, arg)
    out.update(_rusage(), mode=mode, pid=os.getpid(), python=sys.version.split()[0])
    sys.stdout.flush()
    print(json.dumps(out, default=str))
    gc.freeze()  # as the CLI does at exit (fer_pipeline.cli.main)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
