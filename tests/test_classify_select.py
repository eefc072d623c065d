"""Execution-provider selection (GPU when present) is decided without a GPU."""
import pytest

from fer_pipeline.classify import select_providers


@pytest.mark.parametrize("available,device,expected", [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    (["CPUExecutionProvider"], "auto", ["CPUExecutionProvider"]),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu", ["CPUExecutionProvider"]),
    (["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], "cuda",
     ["CUDAExecutionProvider", "CPUExecutionProvider"]),
])
def test_select_providers(available, device, expected):
    assert select_providers(available, device) == expected


def test_cuda_required_but_missing():
    with pytest.raises(ValueError, match="CUDA"):
        select_providers(["CPUExecutionProvider"], "cuda")
    with pytest.raises(ValueError):
        select_providers(["CPUExecutionProvider"], "tpu")
