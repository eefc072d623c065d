"""Explanations of the emotion network: which parts of the aligned face its answer rests on.

* :mod:`~fer_pipeline.explain.occlusion`: occlusion sensitivity (Zeiler & Fergus 2014), any ONNX model, numpy and
  onnxruntime only;
* :mod:`~fer_pipeline.explain.gradcam`: Grad-CAM (Selvaraju et al. 2017) of a torch training checkpoint (``train``
  extra: torch, captum), imported only when used;
* :mod:`~fer_pipeline.explain.regions`: shares of positive importance in the upper, middle and lower thirds;
* :mod:`~fer_pipeline.explain.render`: heatmap overlays and the mean-map figure;
* :mod:`~fer_pipeline.explain.sources` / :mod:`~fer_pipeline.explain.video`: the faces of an image, a folder or
  the key moments of a video;
* :func:`explain_path`: all of it, as ``fer-pipeline explain`` runs it.
"""

from fer_pipeline.explain.core import METHODS, TARGETS, ExplainResult, build_explainer, explain_crops, explain_path
from fer_pipeline.explain.regions import REGIONS, region_bounds, region_shares, template_thirds

__all__ = ["METHODS", "REGIONS", "TARGETS", "ExplainResult", "build_explainer", "explain_crops", "explain_path",
           "region_bounds", "region_shares", "template_thirds"]
