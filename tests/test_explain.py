"""`fer-pipeline explain`: occlusion maps of the shipped model on real faces it never saw (FER2013 PrivateTest:
neither trained nor selected on), region shares, heatmap files, the JSON summary, clean failures, Grad-CAM on a
small checkpoint of the training module, and the key-moment faces of a shared clip."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from conftest import IMAGES, MODEL, REPO, SHARED, VIDEOS
from fer_pipeline.classify import EmotionModel
from fer_pipeline.explain import REGIONS, explain_path, region_bounds, region_shares, template_thirds
from fer_pipeline.explain.occlusion import occlusion_maps, patch_starts

CLI = [sys.executable, "-m", "fer_pipeline.cli", "explain"]
#: faces per class in the test folder (the first PrivateTest files by name): few, with a coarse stride, for speed
PER_CLASS = {"happy": 10, "surprise": 4, "neutral": 3}
COARSE = ["--patch", "8", "--stride", "8"]


@pytest.fixture(scope="module")
def unseen_folder(tmp_path_factory):
    """An ImageFolder of FER2013 PrivateTest faces (the original JPEG files), ``<class>/<file>``."""
    root = tmp_path_factory.mktemp("unseen")
    with zipfile.ZipFile(SHARED / "fer2013.zip") as z:
        for label, n in PER_CLASS.items():
            names = sorted(x for x in z.namelist() if x.startswith(f"test/{label}/PrivateTest_"))[:n]
            (root / label).mkdir()
            for name in names:  # renamed: a "PrivateTest_" file name would make it a FER2013 layout
                (root / label / name.rsplit("/", 1)[1].replace("PrivateTest_", "face-")).write_bytes(z.read(name))
    return root


@pytest.fixture(scope="module")
def folder_run(unseen_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("explained")
    r = subprocess.run([*CLI, str(unseen_folder), "--out", str(out), "--method", "occlusion", "--json", *COARSE],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    return r, out


def test_happy_faces_rest_on_the_lower_third_more_than_the_upper(folder_run):
    r, _ = folder_run
    happy = json.loads(r.stdout)["per_class"]["happy"]["regions"]
    assert happy["lower"] > happy["upper"]


def test_json_is_one_object_with_a_count_per_class(folder_run):
    r, out = folder_run
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    res = json.loads(lines[0])
    assert {lab: m["n"] for lab, m in res["per_class"].items()} == PER_CLASS
    assert res["kind"] == "imagefolder" and res["n"] == sum(PER_CLASS.values())
    assert res["target"] == "true" and res["group_by"] == "true class"
    for m in res["per_class"].values():
        assert set(m["regions"]) == set(REGIONS)
        assert sum(m["regions"].values()) == pytest.approx(1.0, abs=1e-3)
    assert json.loads((out / "explain.json").read_text())["per_class"] == res["per_class"]


def test_heatmaps_are_pngs_of_the_crop_size(folder_run, unseen_folder):
    _, out = folder_run
    h, w = EmotionModel(MODEL).spec.input_hw
    for label in PER_CLASS:
        pngs = sorted((out / label).glob("*.png"))
        assert [p.stem for p in pngs] == sorted(p.stem for p in (unseen_folder / label).iterdir())
        for p in pngs + [out / "mean" / f"{label}.png"]:
            with Image.open(p) as im:
                assert im.format == "PNG" and im.size == (w, h) and im.mode == "RGB"
    with Image.open(out / "mean-maps.png") as im:
        assert im.format == "PNG" and im.width > im.height
    rows = (out / "explain.csv").read_text().splitlines()
    assert len(rows) == 1 + sum(PER_CLASS.values())
    with np.load(out / "maps.npz") as z:
        assert z["maps"].shape == (sum(PER_CLASS.values()), h, w) and z["maps"].dtype == np.float32


def test_region_shares_sum_to_one_of_positive_importance():
    m = np.zeros((2, 48, 48), np.float32)
    m[0, 40:, :] = 1.0  # all in the lower third
    m[0, :10, :] = -5.0  # negative importance does not count
    m[1, 20, 10] = 3.0  # middle third (rows 16-31)
    m[1, 0, 0] = 1.0
    s = region_shares(m)
    np.testing.assert_allclose(s, [[0, 0, 1], [0.25, 0.75, 0]])
    np.testing.assert_allclose(s.sum(1), 1.0)
    assert np.isnan(region_shares(-np.ones((48, 48)))).all()  # nothing positive: no shares
    assert region_bounds(48) == [(0, 16), (16, 32), (32, 48)]
    # the shipped template puts the eyes and the nose in the middle third, the mouth corners in the lower one
    assert template_thirds(EmotionModel(MODEL).spec.template, 48) == {
        "left_eye": "middle", "right_eye": "middle", "nose": "middle", "left_mouth": "lower", "right_mouth": "lower"}


def test_occlusion_finds_the_pixels_a_model_reads():
    """A model whose class-0 probability is the brightness of a 6x6 square: hiding the square (grey patch over
    white) lowers it, hiding anything else changes nothing."""

    def predict(x):
        p0 = x[:, 36:42, 10:16].astype(np.float64).mean((1, 2)) / 255.0
        return np.stack([p0, 1 - p0], 1).astype(np.float32)

    crops = np.full((2, 48, 48), 255, np.uint8)
    maps, probs = occlusion_maps(predict, crops, np.array([0, -1]), patch_px=4, stride_px=2, fill=0.5)
    assert maps.shape == (2, 48, 48) and maps.dtype == np.float32
    np.testing.assert_allclose(probs[:, 0], 1.0)
    inside = np.zeros((48, 48), bool)
    inside[36:42, 10:16] = True
    assert (maps[0][inside] > 0).all()
    far = np.ones((48, 48), bool)
    far[32:46, 6:20] = False  # patches overlapping the square reach up to 3 px around it
    assert np.abs(maps[0][far]).max() == 0
    assert region_shares(maps[0])[2] == pytest.approx(1.0)  # rows 34-43 at most: the lower third
    np.testing.assert_allclose(maps[1], maps[0])  # -1: the predicted class, class 0 here
    assert patch_starts(48, 8, 8).tolist() == [0, 8, 16, 24, 32, 40]
    assert patch_starts(48, 8, 12).tolist() == [0, 12, 24, 36, 40]  # the last patch is flush with the edge


def test_photo_with_detect_explains_every_face(tmp_path):
    res = explain_path(IMAGES / "multi_face.jpg", tmp_path, detect=True, patch_px=8, stride_px=8)
    assert res["kind"] == "image" and res["n"] == 5 and res["target"] == "predicted"
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [f"multi_face-face{k}.png" for k in range(1, 6)]
    assert res["mean_maps"] is None  # mean maps are for folders of labelled faces
    assert sum(m["n"] for m in res["per_class"].values()) == 5


@pytest.mark.parametrize("bad", ["corrupt", "not_an_image"])
def test_bad_input_fails_with_one_line(tmp_path, unseen_folder, bad):
    if bad == "corrupt":
        folder = tmp_path / "faces"
        (folder / "happy").mkdir(parents=True)
        for f in (unseen_folder / "happy").iterdir():
            (folder / "happy" / f.name).write_bytes(f.read_bytes())
        (folder / "happy" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is no JPEG")
        target, named = folder, "broken.jpg"
    else:
        target = tmp_path / "notes.txt"
        target.write_text("hello")
        named = "notes.txt"
    r = subprocess.run([*CLI, str(target), "--out", str(tmp_path / "out"), "--json"], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0]


def _tiny_checkpoint(path, ema_decay: float):
    """A randomly initialised checkpoint of the training module (the dict Lightning saves: hyper-parameters and
    state dict), with a 2-stage VGG."""
    torch = pytest.importorskip("torch")
    from fer_pipeline.training.backbones import build_backbone
    from fer_pipeline.training.data import FER2013_LABELS
    from fer_pipeline.training.module import EmotionClassifier

    torch.manual_seed(0)
    module = EmotionClassifier(build_backbone("vgg", widths=(8, 16), convs_per_stage=(1, 2)), FER2013_LABELS,
                               mean=0.5, std=0.25, ema_decay=ema_decay)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_gradcam_on_a_small_checkpoint(tmp_path, ema_decay):
    pytest.importorskip("captum")
    from fer_pipeline.explain.gradcam import GradCamExplainer
    from fer_pipeline.training.data import load_fer2013

    ckpt = _tiny_checkpoint(tmp_path / "tiny.ckpt", ema_decay)
    g = GradCamExplainer(ckpt)
    assert g.layer[0].out_channels == 16  # the last conv block
    faces = load_fer2013(SHARED / "fer2013.zip", "private-test").images[:5]
    maps, probs = g.explain(faces, np.array([3, 3, -1, 0, 5]))
    assert maps.shape == (5, 48, 48) and maps.dtype == np.float32 and (maps >= 0).all()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_gradcam_follows_the_run_config_and_refuses_a_backbone_without_convolution(tmp_path):
    pytest.importorskip("captum")
    torch = pytest.importorskip("torch")
    import yaml

    from fer_pipeline.explain.gradcam import GradCamExplainer
    from fer_pipeline.training.backbones import build_backbone
    from fer_pipeline.training.data import FER2013_LABELS
    from fer_pipeline.training.module import EmotionClassifier

    faces = np.full((2, 48, 48), 128, np.uint8)
    for name, kwargs in (("vgg", {"widths": [8, 16, 16], "convs_per_stage": 1}), ("mlp", {"hidden": [16]})):
        run = tmp_path / name
        run.mkdir()
        module = EmotionClassifier(build_backbone(name, **kwargs), FER2013_LABELS, mean=0.5, std=0.25)
        torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, run / "best.ckpt")
        (run / "config.yaml").write_text(yaml.safe_dump({"model": {"backbone": name, "kwargs": kwargs}}))
        if name == "vgg":
            g = GradCamExplainer(run / "best.ckpt")
            assert g.layer[0].out_channels == 16 and g.explain(faces)[0].shape == (2, 48, 48)
        else:
            with pytest.raises(ValueError, match="no convolution"):
                GradCamExplainer(run / "best.ckpt")


def test_gradcam_cli_on_a_checkpoint_and_the_clear_error_for_onnx(tmp_path, unseen_folder):
    pytest.importorskip("captum")
    ckpt = _tiny_checkpoint(tmp_path / "tiny.ckpt", 0.0)
    r = subprocess.run([*CLI, str(unseen_folder), "--out", str(tmp_path / "gc"), "--method", "gradcam", "--model",
                        str(ckpt), "--json"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["method"] == "gradcam" and {k: m["n"] for k, m in res["per_class"].items()} == PER_CLASS
    with Image.open(next((tmp_path / "gc" / "happy").glob("*.png"))) as im:
        assert im.size == (48, 48)
    r = subprocess.run([*CLI, str(unseen_folder), "--out", str(tmp_path / "x"), "--method", "gradcam", "--model",
                        str(MODEL)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2
    assert "Grad-CAM needs a torch checkpoint (.ckpt) and the train extra" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_gradcam_without_torch_says_what_it_needs(monkeypatch, tmp_path):
    from fer_pipeline.explain.gradcam import GRADCAM_NEEDS, GradCamExplainer, GradCamUnavailable

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(GradCamUnavailable, match=r"Grad-CAM needs a torch checkpoint \(\.ckpt\)") as e:
        GradCamExplainer(tmp_path / "model.ckpt")
    assert str(e.value).startswith(GRADCAM_NEEDS)


def test_video_key_moment_faces(tmp_path):
    res = explain_path(VIDEOS / "single_face.mp4", tmp_path, patch_px=8, stride_px=8)
    assert res["kind"] == "video" and res["key_seconds"][0] == 0 and res["n"] >= 1
    pngs = sorted(p.stem for p in tmp_path.glob("moment-*.png"))
    assert len(pngs) == res["n"]
    assert {p.split("s-track")[0] for p in pngs} <= {f"moment-{s}" for s in res["key_seconds"]}
    rows = (tmp_path / "explain.csv").read_text().splitlines()[1:]
    assert all(row.split(",")[-1] != "" for row in rows)  # each face has its timestamp


def test_limit_and_target_checks(tmp_path, unseen_folder):
    res = explain_path(unseen_folder, tmp_path / "a", limit=2, patch_px=8, stride_px=8, target="predicted")
    assert {k: m["n"] for k, m in res["per_class"].items()} == {k: 2 for k in PER_CLASS}
    assert res["target"] == "predicted"
    with pytest.raises(ValueError, match="true"):
        explain_path(IMAGES / "single_face.jpg", tmp_path / "b", detect=True, target="true")
    with pytest.raises(ValueError, match="method"):
        explain_path(unseen_folder, tmp_path / "c", method="lime")
    with Image.open(IMAGES / "single_face.jpg") as im:  # an image given as it is: resized to the crop
        im.convert("L").resize((48, 48)).save(tmp_path / "face.png")
    one = explain_path(tmp_path / "face.png", tmp_path / "d", patch_px=8, stride_px=8)
    assert one["n"] == 1 and (tmp_path / "d" / "face.png").is_file()


def test_report_explain_puts_each_key_moment_faces_map_in_the_report(tmp_path):
    """``report.explain: true``: the report's key moments carry their faces' occlusion maps; off (the default) the
    fingerprint is that of a run without the setting and no map is made."""
    import pandas as pd

    from fer_pipeline.config import PipelineConfig
    from fer_pipeline.metrics import headline_seconds, key_moments
    from fer_pipeline.pipeline import analyze_video
    from fer_pipeline.report import render_all, saved_thumbnails

    on = PipelineConfig.load(None, {"report.explain": True})
    assert "report" in on.fingerprint() and "report" not in PipelineConfig().fingerprint()
    row = analyze_video(VIDEOS / "single_face.mp4", tmp_path, on)
    assert row["status"] == "ok", row["error"]
    vid = row["video_id"]
    au = pd.read_parquet(tmp_path / "audience").query("video_id == @vid").sort_values("second")
    cards = set(headline_seconds(key_moments(au)))
    thumbs = saved_thumbnails(tmp_path / "reports", vid)
    assert set(thumbs["explain"]) == cards  # one viewer, seen in every card's second
    labels = EmotionModel(MODEL).labels
    for entries in thumbs["explain"].values():
        for e in entries:
            png = Image.open(tmp_path / "reports" / e["ref"])
            assert png.size == (144, 144) and png.mode == "RGB"
            assert e["label"] in labels and 0 < e["p"] <= 1
            assert sum(e["regions"].values()) == pytest.approx(1.0, abs=1e-3)
    render_all(tmp_path)
    html = (tmp_path / "reports" / f"{vid}.html").read_text()
    assert all(e["ref"] in html for es in thumbs["explain"].values() for e in es)
    assert "occlusion sensitivity" in html

    again = analyze_video(VIDEOS / "single_face.mp4", tmp_path, PipelineConfig())
    assert again["status"] == "ok" and "report.explain" in (again["note"] or "")
    assert saved_thumbnails(tmp_path / "reports", vid)["explain"] == {}
    render_all(tmp_path)
    assert "occlusion sensitivity" not in (tmp_path / "reports" / f"{vid}.html").read_text()
