"""Execution-provider selection (GPU when present) is decided without a GPU: fer_pipeline.onnx, the one picker and
session factory every model uses."""
import itertools

import numpy as np
import pytest

from fer_pipeline import onnx as onnx_rt
from fer_pipeline.onnx import CPU, CUDA, select_providers

AVAILABLE = {
    "cpu only": [CPU],
    "cuda + cpu": [CUDA, CPU],
    "tensorrt + cuda + cpu": ["TensorrtExecutionProvider", CUDA, CPU],
    "azure + cpu": ["AzureExecutionProvider", CPU],
    "cpu listed first": [CPU, CUDA],
}
EXPECTED = {  # (has CUDA, device) -> providers; None = ValueError
    (False, "auto"): [CPU], (False, "cpu"): [CPU], (False, "cuda"): None,
    (True, "auto"): [CUDA, CPU], (True, "cpu"): [CPU], (True, "cuda"): [CUDA, CPU],
}


@pytest.mark.parametrize("available,device", list(itertools.product(AVAILABLE, onnx_rt.DEVICES)))
def test_select_providers_every_combination(available, device):
    providers = AVAILABLE[available]
    want = EXPECTED[(CUDA in providers, device)]
    if want is None:
        with pytest.raises(ValueError, match="CUDA"):
            select_providers(providers, device)
    else:
        assert select_providers(providers, device) == want


@pytest.mark.parametrize("device", ["tpu", "gpu", "CUDA", "", None])
def test_unknown_device_is_refused(device):
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        select_providers([CUDA, CPU], device)


def test_classify_reexports_the_picker():
    from fer_pipeline import classify

    assert classify.select_providers is select_providers


def _identity_model() -> bytes:
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "ident",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    m.metadata_props.add(key="k", value="v")
    return m.SerializeToString()


def test_session_factory_options_and_errors(tmp_path):
    model = _identity_model()
    s = onnx_rt.session(model, device="cpu", threads=1)
    assert s.get_providers() == [CPU] and not onnx_rt.on_gpu(s)
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    np.testing.assert_array_equal(s.run(None, {"x": x})[0], x)
    (tmp_path / "m.onnx").write_bytes(model)
    assert onnx_rt.metadata(tmp_path / "m.onnx") == {"k": "v"}
    import onnxruntime as ort

    assert onnx_rt.session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert onnx_rt.session_options().intra_op_num_threads == 0  # ORT's default
    assert onnx_rt.session_options(3).intra_op_num_threads == 3
    assert onnx_rt.session_options(optimize=False).graph_optimization_level \
        == ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with pytest.raises(ValueError):
        onnx_rt.session_options(-1)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(onnx_rt.SessionError, match="junk.onnx") as ei:
        onnx_rt.session(tmp_path / "junk.onnx", device="cpu")
    assert "\n" not in str(ei.value)
    if CUDA not in ort.get_available_providers():
        with pytest.raises(ValueError, match="CUDA"):
            onnx_rt.session(model, device="cuda")
