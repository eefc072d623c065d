"""Every training recipe runs (``fer-pipeline train --smoke``, writing nothing); the model-zoo backbones export to
ONNX and match torch; the CPU budget stops a run, is saved in its checkpoints and drives the lr schedule."""
from __future__ import annotations

import copy
import inspect
import json
import re
import types
from pathlib import Path

import numpy as np
import pytest

from conftest import MODEL, REPO, SHARED

pytestmark = pytest.mark.slow
pytest.importorskip("lightning")

RECIPES = sorted((REPO / "configs" / "train").glob("*.yaml"))
ZOO = ("inception_v3", "resnet50", "vgg16", "mobilenet_v2", "resnet18")


def _snapshot(root: Path) -> dict | None:
    """``{relative path: (size, mtime_ns)}`` of every file under ``root``; None when ``root`` does not exist."""
    if not root.exists():
        return None
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _run_cli(*args: str):
    from typer.testing import CliRunner

    from fer_pipeline.cli import app

    return CliRunner().invoke(app, list(args))


def test_every_recipe_is_covered():
    names = {p.name for p in RECIPES}
    assert {f"fer2013_{k}.yaml" for k in ZOO} <= names and "fer2013_vgg.yaml" in names


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_smoke_runs_and_writes_nothing(recipe, tmp_path):
    """``--smoke`` trains and validates 2 batches of the recipe and exits 0, and nothing is written: models/ keeps
    the same files, sizes and mtimes, and the out_dir / export path stay absent. They are redirected to fresh
    folders under tmp_path (``--set``), where an absent folder proves that nothing was written, even while another
    run writes the recipe's real out_dir (the model zoo trains in runs/ in the background); an export_onnx under
    models/ is kept as it is, so the models/ snapshot checks it."""
    from fer_pipeline.training.train import TrainConfig

    cfg = TrainConfig.from_yaml(recipe)
    out = tmp_path / "out"
    args = ["train", "--config", str(recipe.relative_to(REPO)), "--smoke", "--set", f"out_dir={out}"]
    export = Path(cfg.export_onnx) if cfg.export_onnx else None
    if export is not None and "models" not in export.parts:
        export = tmp_path / "export" / "model.onnx"
        args += ["--set", f"export_onnx={export}"]
    if cfg.init_from and not Path(cfg.init_from).is_file():
        # the stage-1 model it warm-starts from is a training output (runs/), absent in a fresh clone: the shipped
        # model has the same backbone and labels (fer_pipeline.training.warmstart reads it)
        args += ["--set", f"init_from={MODEL.relative_to(REPO)}"]
    if cfg.data.soft_targets == "teacher" and not Path(cfg.data.soft_source).is_file():
        # the teacher (an ensemble of trained members) is a training output too: the shipped model stands in
        args += ["--set", f"data.soft_source={MODEL.relative_to(REPO)}"]
    models_before = _snapshot(REPO / "models")
    r = _run_cli(*args)
    assert r.exit_code == 0, r.output
    line = [ln for ln in r.output.splitlines() if ln.startswith("recipe ok: ")]
    assert len(line) == 1 and cfg.model.backbone in line[0] and "nothing written" in line[0], r.output
    loss = float(re.search(r"loss ([0-9.]+)", line[0]).group(1))
    assert 0 < loss < 20
    assert _snapshot(REPO / "models") == models_before
    assert not out.exists()
    if export is not None and "models" not in export.parts:  # (an export to models/: the snapshot above)
        assert not export.parent.exists()
    assert not (REPO / "lightning_logs").exists() and not (REPO / "checkpoints").exists()


def test_smoke_names_a_missing_warm_start(tmp_path):
    r = _run_cli("train", "--config", "configs/train/fer2013_vgg_swa.yaml", "--smoke",
                 "--set", f"init_from={tmp_path / 'missing.onnx'}")
    assert r.exit_code == 2
    assert "init_from not found" in r.output and "missing.onnx" in r.output


def test_smoke_names_a_missing_teacher(tmp_path):
    r = _run_cli("train", "--config", "configs/train/fer2013_vgg_distill.yaml", "--smoke",
                 "--set", f"data.soft_source={tmp_path / 'teacher.onnx'}")
    assert r.exit_code == 2
    assert "soft_source not found" in r.output and "teacher.onnx" in r.output


def _documented_parameters(fn) -> int:
    m = re.search(r"Parameters: ([0-9,]+) \(7 classes", inspect.getdoc(fn))
    assert m, f"{fn.__name__}: no 'Parameters: N (7 classes' in the docstring"
    return int(m.group(1).replace(",", ""))


@pytest.mark.parametrize("arch", ZOO)
def test_zoo_backbone_documented_and_exports_to_onnx(arch, tmp_path):
    """Each zoo backbone: the parameter count its docstring states, (N,1,48,48) float32 -> (N,7) logits, and the
    ONNX export of the repo (fer_pipeline.training.export) runs in onnxruntime, on real faces as close to the
    network evaluated in float64 as torch's fp32 is."""
    import torch

    from fer_pipeline.classify import EmotionModel
    from fer_pipeline.training.backbones import BACKBONES, build_backbone, count_parameters
    from fer_pipeline.training.data import FER2013_LABELS, load_fer2013
    from fer_pipeline.training.export import export_onnx
    from fer_pipeline.training.module import EmotionClassifier
    from fer_pipeline.training.train import TrainConfig

    cfg = TrainConfig.from_yaml(REPO / "configs" / "train" / f"fer2013_{arch}.yaml")
    assert cfg.model.backbone == arch and cfg.optim.budget_cpu_min == 20
    assert "models" not in Path(cfg.out_dir).parts and "models" not in Path(cfg.export_onnx).parts
    torch.manual_seed(0)
    bb = build_backbone(arch, num_classes=7, **cfg.model.kwargs)
    assert count_parameters(bb) == _documented_parameters(BACKBONES[arch])
    assert bb.eval()(torch.zeros(3, 1, 48, 48)).shape == (3, 7)
    # untrained BatchNorm layers (running mean 0, variance 1) let activations grow through the depth until the
    # softmax is one-hot, where any graph would agree: give them the statistics of real faces first, as training
    # would, and scale the logits to unit spread, so that the probabilities compared below are informative
    faces = load_fer2013(SHARED / "fer2013.zip", "public-test").images[:64]
    module = EmotionClassifier(bb, FER2013_LABELS, 0.5, 0.25)
    for m in bb.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # cumulative average
    x = module.normalise(torch.from_numpy(faces)[:, None])
    with torch.no_grad():
        bb.train()(x)
        last = [m for m in bb.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias.zero_()
        last.weight.div_(float(bb.eval()(x).std()))  # logits of standard deviation 1
    module.eval()
    card = export_onnx(module, cfg, {}, tmp_path / "m.onnx", tta=True)
    assert card["backbone"]["parameters"] == count_parameters(bb)
    fp64 = card["onnx_vs_float64_check"]  # only when ONNX and torch fp32 differ by more than 1e-4 (deep networks)
    assert card["onnx_vs_torch_max_abs_diff"] < 1e-4 or fp64["onnx_vs_fp64"] <= 2 * fp64["torch_fp32_vs_fp64"] + 1e-4
    p_onnx = EmotionModel(tmp_path / "m.onnx", threads=1).predict(faces)
    with torch.inference_mode():
        p_torch = module.predict_proba(torch.from_numpy(faces)[:, None], tta=True).numpy()
    np.testing.assert_allclose(p_onnx.sum(1), 1.0, atol=1e-5)
    # against the same function in float64, ONNX is as close as torch's own fp32 (deep networks amplify rounding)
    bb64 = copy.deepcopy(bb).double().eval()
    with torch.inference_mode():
        x64 = (torch.from_numpy(faces)[:, None].double() / 255 - module.mean) / module.std
        p64 = ((torch.softmax(bb64(x64), 1) + torch.softmax(bb64(x64.flip(-1)), 1)) / 2).numpy()
    err_onnx, err_torch = np.abs(p_onnx - p64).max(), np.abs(p_torch - p64).max()
    assert err_onnx <= 2 * err_torch + 1e-4, (err_onnx, err_torch)
    assert p_onnx.max() < 0.99 and p_onnx.std(0).max() > 1e-3  # not saturated, and faces differ


def test_inception_v3_needs_75_px():
    from fer_pipeline.training.backbones import build_backbone

    with pytest.raises(ValueError, match="75"):
        build_backbone("inception_v3", input_size=64)


def test_budget_schedule_matches_onecycle():
    """The budget-driven schedule has torch's OneCycleLR shape (lr and momentum) at the same fraction of the run."""
    import torch

    from fer_pipeline.training.module import schedule_at

    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True)
    total = 2000
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total)
    for step in range(total):
        factor, momentum = schedule_at("onecycle", step / (total - 1))
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * factor, abs=2e-4)
        assert opt.param_groups[0]["momentum"] == pytest.approx(momentum, abs=2e-4)
        opt.step()
        if step < total - 1:
            sched.step()
    assert schedule_at("cosine", 0.0) == (1.0, None) and schedule_at("cosine", 1.0)[0] == pytest.approx(0.0)
    assert schedule_at("constant", 0.7) == (1.0, None)
    with pytest.raises(ValueError):
        schedule_at("linear", 0.5)


def test_cpu_budget_stops_the_run_and_a_rerun_trains_no_further(tmp_path, monkeypatch):
    """A budget of 5 CPU seconds with a CPU clock that advances 1 s per reading: training stops after the 5th
    batch (8 batches per epoch), validates there (the selection sees the last weights), records it, and running
    the same recipe again resumes from last.ckpt with the budget already spent: no further step, no new record."""
    import fer_pipeline.training.budget as budget_mod
    from fer_pipeline.training.train import TrainConfig, train

    ticks = iter(range(10**6))
    monkeypatch.setattr(budget_mod, "time", types.SimpleNamespace(process_time=lambda: float(next(ticks)),
                                                                  monotonic=budget_mod.time.monotonic))
    over = {"data.limit": 256, "optim.batch_size": 32, "optim.epochs": 50, "optim.budget_cpu_min": 5 / 60,
            "optim.val_check_interval": 0.5, "out_dir": str(tmp_path / "run"), "export_onnx": None,
            "evaluate_test": False, "model.kwargs": {"widths": [8, 16], "convs_per_stage": 1}}
    cfg = TrainConfig.from_yaml("configs/train/fer2013_vgg.yaml", over)
    m = train(cfg)
    b = m["budget"]
    assert b["stopped_by_budget"] and b["global_step"] == 5
    assert b["epochs_reached"] == pytest.approx(5 / 8, abs=1e-3)
    assert [h["step"] for h in b["history"]] == [4, 5]  # every half epoch, and at the stop
    assert b["train_cpu_min"] * 60 >= 5 and b["val_cpu_min"] > 0
    assert "test" not in m and m["val"]["n"] == 3589
    assert m["best_val_acc_in_training"] == pytest.approx(max(h["val_acc"] for h in b["history"]))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["budget"]["global_step"] == 5

    m2 = train(cfg)
    assert m2["budget"]["global_step"] == 5 and len(m2["budget"]["history"]) == 2


def test_cpu_budget_rejects_a_non_positive_budget():
    from pydantic import ValidationError

    from fer_pipeline.training.budget import CPUBudget
    from fer_pipeline.training.train import TrainConfig

    with pytest.raises(ValueError):
        CPUBudget(0)
    with pytest.raises(ValidationError):
        TrainConfig.from_yaml("configs/train/fer2013_vgg.yaml", {"optim.budget_cpu_min": -1})


def test_shared_representation_ensemble_branches_and_export(tmp_path):
    """ESR (esr_vgg): in training mode one set of logits per branch, in eval mode the log of the branches' mean
    probability (so its softmax is the ensemble average), and the export is an ordinary emotion model whose
    probabilities on real faces match torch's."""
    import torch

    from fer_pipeline.classify import EmotionModel
    from fer_pipeline.training.backbones import build_backbone, count_parameters
    from fer_pipeline.training.data import FER2013_LABELS, load_fer2013
    from fer_pipeline.training.export import export_onnx
    from fer_pipeline.training.module import EmotionClassifier
    from fer_pipeline.training.train import TrainConfig

    cfg = TrainConfig.from_yaml(REPO / "configs" / "train" / "fer2013_esr.yaml")
    torch.manual_seed(0)
    bb = build_backbone("esr_vgg", num_classes=7, **cfg.model.kwargs)
    single = build_backbone("vgg", num_classes=7, widths=[32, 64, 128, 256])
    trunk = count_parameters(bb.trunk)
    assert count_parameters(bb) == trunk + 4 * (count_parameters(single) - trunk)  # 4 branches of the later stages
    faces = load_fer2013(SHARED / "fer2013.zip", "public-test").images[:32]
    module = EmotionClassifier(bb, FER2013_LABELS, 0.5, 0.25)
    x = module.normalise(torch.from_numpy(faces)[:, None])
    with torch.no_grad():
        bb.train()(x)  # BatchNorm statistics of real faces
        branch_logits = bb.train()(x)
        assert branch_logits.shape == (32, 4, 7)
        bb.eval()
        per_branch = torch.stack([torch.softmax(b(bb.trunk(x)), 1) for b in bb.branches], 1)
        np.testing.assert_allclose(torch.softmax(bb(x), 1).numpy(), per_branch.mean(1).numpy(), atol=1e-5)
        # the branches are different networks: their probabilities differ
        assert float((per_branch[:, 0] - per_branch[:, 1]).abs().max()) > 1e-3
    module.eval()
    export_onnx(module, cfg, {}, tmp_path / "esr.onnx", tta=True)
    p_onnx = EmotionModel(tmp_path / "esr.onnx", threads=1).predict(faces)
    with torch.inference_mode():
        p_torch = module.predict_proba(torch.from_numpy(faces)[:, None], tta=True).numpy()
    np.testing.assert_allclose(p_onnx.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4)
    with pytest.raises(ValueError):
        build_backbone("esr_vgg", shared_stages=4)
