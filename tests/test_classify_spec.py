"""ModelSpec writes and reads the emotion model's ONNX metadata and card fields from one key list."""
import dataclasses
import json

import numpy as np
import pytest
from conftest import MODEL, REPO

from fer_pipeline.align import FER2013_TEMPLATE, TEMPLATE_SIZE
from fer_pipeline.classify import (
    METADATA_KEYS,
    REQUIRED_KEYS,
    EmotionModel,
    ModelError,
    ModelSpec,
)
from fer_pipeline.fileutil import sha256_file

onnx = pytest.importorskip("onnx")


def tiny_classifier(n_labels: int = 3):
    """An ONNX graph of the exported layout: ``input (B,1,48,48) float32`` -> ``probs (B,n)`` (softmax of the mean
    pixel times constants)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(1, n_labels + 1, dtype=np.float32).reshape(1, n_labels), "w")
    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Unsqueeze", ["m", "ax"], ["m2"]),
             helper.make_node("MatMul", ["m2", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                        ["batch", 1, 48, 48])],
                          [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", n_labels])],
                          initializer=[w, numpy_helper.from_array(np.array([1], np.int64), "ax")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


SPEC = ModelSpec(name="tiny", labels=("a", "b", "c"), input_hw=(48, 48), color="gray",
                 template=np.asarray(FER2013_TEMPLATE), align_size=TEMPLATE_SIZE, mean_std=(0.5077, 0.2551),
                 tta_flip=True)


def test_round_trip_through_an_onnx_file(tmp_path):
    model = tiny_classifier()
    model.metadata_props.add(key="stale", value="dropped")
    SPEC.write_metadata(model)
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    assert {p.key for p in onnx.load(str(path)).metadata_props} == set(METADATA_KEYS.values())
    got = ModelSpec.from_onnx(path)
    assert got == dataclasses.replace(SPEC, path=path, sha256=sha256_file(path))
    assert got.to_metadata() == SPEC.to_metadata()
    assert got.template.dtype == np.float32 and got.template.shape == (5, 2)
    # with a card beside it the model loads and runs like a shipped one
    card = {"name": "tiny", "file": path.name, "sha256": sha256_file(path), **SPEC.card_fields()}
    path.with_suffix(".json").write_text(json.dumps(card))
    loaded = ModelSpec.load(path)
    assert loaded == dataclasses.replace(SPEC, path=path, sha256=card["sha256"], card=card)
    em = EmotionModel(path, device="cpu")
    p = em.predict(np.zeros((5, 48, 48), np.uint8))
    assert p.shape == (5, 3) and np.allclose(p.sum(1), 1)


def test_optional_keys_take_defaults_and_required_ones_are_checked():
    meta = SPEC.to_metadata()
    minimal = {k: meta[k] for k in REQUIRED_KEYS}
    spec = ModelSpec.from_metadata(minimal, card={"name": "from-card"})
    assert spec.name == "from-card" and spec.mean_std is None and spec.align_size is None and not spec.tta_flip
    assert spec.labels == SPEC.labels and np.array_equal(spec.template, SPEC.template)
    for key in REQUIRED_KEYS:
        with pytest.raises(ModelError, match=key):
            ModelSpec.from_metadata({k: v for k, v in meta.items() if k != key})
    with pytest.raises(ModelError, match="JSON"):
        ModelSpec.from_metadata({**meta, "labels": "[not json"})
    with pytest.raises(ModelError, match=r"\(5,2\)"):
        ModelSpec.from_metadata({**meta, "align_template": "[[1, 2]]"})
    with pytest.raises(ModelError, match="color"):
        dataclasses.replace(SPEC, color="bgr")


@pytest.mark.parametrize("name", sorted(p.relative_to(REPO / "models").as_posix()
                                          for p in [*(REPO / "models").glob("*.onnx"),
                                                    *(REPO / "models" / "members").glob("*.onnx")]))
def test_shipped_models_match_what_the_spec_writes(name):
    """The shipped files (and the ensemble members kept beside them) load unchanged, and what ModelSpec would write
    for them is what they carry: the same metadata strings and the same card fields."""
    path = REPO / "models" / name
    spec = ModelSpec.load(path)
    assert spec.sha256 == sha256_file(path) == spec.card["sha256"]
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    # every key the spec writes, and no other (an ensemble has no single standardisation: no mean_std_in_graph)
    assert {k: v for k, v in meta.items() if k in METADATA_KEYS.values()} == spec.to_metadata()
    assert {k: spec.card[k] for k in spec.card_fields()} == spec.card_fields()
    assert spec == ModelSpec.load(path)


def test_injected_session_is_used():
    from fer_pipeline import onnx as onnx_rt

    sess = onnx_rt.session(MODEL, device="cpu", threads=1)
    em = EmotionModel(MODEL, session=sess)
    assert em.session is sess and not em.on_gpu
