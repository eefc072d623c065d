"""The package as a new user gets it: the built wheel holds the package alone (with its models, templates, default
settings and plotly.js, the flows under ``fer_pipeline.flows``, no torch), and once installed into a fresh virtual
environment it analyses a shared clip from another folder, through the Python API and ``python -m fer_pipeline``."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, VIDEOS

CLIP = VIDEOS / "single_face.mp4"
#: What the wheel is built from: pyproject.toml's inputs (copied, so that building leaves nothing in the checkout).
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "fer_pipeline", "flows", "models", "reports", "configs"]
#: Package folder -> repository folder it is built from (pyproject.toml, [tool.setuptools.package-dir]).
MAPPED = {"fer_pipeline.flows": "flows", "fer_pipeline._models": "models",
          "fer_pipeline._templates": "reports/templates", "fer_pipeline._configs": "configs"}


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_pyproject_lists_every_package_and_maps_the_top_level_folders():
    st = _setuptools()
    tree = {".".join(("fer_pipeline", *f.parent.relative_to(REPO / "fer_pipeline").parts))
            for f in (REPO / "fer_pipeline").rglob("__init__.py")}
    assert tree - set(st["packages"]) == set(), "a package of fer_pipeline/ is missing from pyproject.toml"
    assert st["package-dir"] == MAPPED and set(MAPPED) <= set(st["packages"])
    assert all((REPO / folder).is_dir() for folder in MAPPED.values())
    assert not [p for p in st["packages"] if not p.startswith("fer_pipeline")]  # no top-level flows
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and "LICENSE" in project["license-files"]
    assert not [d for d in project["dependencies"] if d.startswith(("torch", "lightning"))]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")
    for name in SOURCES:
        p = REPO / name
        (shutil.copytree(p, src / name, ignore=ignore) if p.is_dir() else shutil.copy2(p, src / name))
    dist = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(dist)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    (whl,) = dist.glob("fer_pipeline-*.whl")
    return whl


@pytest.mark.slow
def test_wheel_holds_the_package_its_data_and_nothing_else(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    (info,) = [t for t in top if t.endswith(".dist-info")]
    assert top == {"fer_pipeline", info}  # no top-level flows, tests, runs, configs ...
    files = set(names)
    for f in (REPO / "fer_pipeline").rglob("*.py"):
        assert f"fer_pipeline/{f.relative_to(REPO / 'fer_pipeline').as_posix()}" in files, f
    for f in (REPO / "flows").glob("*.py"):
        assert f"fer_pipeline/flows/{f.name}" in files, f
    for f in (REPO / "reports" / "templates").glob("*.j2"):
        assert f"fer_pipeline/_templates/{f.name}" in files, f
    for f in (REPO / "models").glob("*.onnx"):
        assert {f"fer_pipeline/_models/{f.name}", f"fer_pipeline/_models/{f.with_suffix('.json').name}"} <= files
    assert {"fer_pipeline/__main__.py", "fer_pipeline/_configs/pipeline.yaml", "fer_pipeline/_models/README.md",
            "fer_pipeline/static/plotly-cartesian.min.js", "fer_pipeline/static/plotly.js-LICENSE"} <= files
    assert not [n for n in names if "/train/" in n and n.startswith("fer_pipeline/_configs")]  # recipes stay out
    meta = zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode()
    assert "License-Expression: MIT" in meta and "License-File: LICENSE" in meta
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert not [r for r in requires if r.split()[1].startswith("torch") and "extra ==" not in r]
    assert f"{info}/licenses/LICENSE" in files
    entry = zipfile.ZipFile(wheel).read(f"{info}/entry_points.txt").decode()
    assert "fer-pipeline = fer_pipeline.cli:main" in entry


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory):
    """A fresh virtual environment (no site-packages of this one) with the wheel and its dependencies installed."""
    root = tmp_path_factory.mktemp("venv") / "v"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=300)
    # --no-compile: modules are compiled when first imported (a third less time for this 1.8 GB environment)
    r = subprocess.run([str(root / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
                        "--disable-pip-version-check", str(wheel)],
                       capture_output=True, text=True, timeout=1500, env=_env(root))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    print(f"fresh venv with the wheel installed in {time.monotonic() - t0:.0f} s")
    yield root
    shutil.rmtree(root, ignore_errors=True)  # 1.8 GB: not kept among pytest's last temporary folders


def _env(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


@pytest.mark.slow
def test_installed_wheel_analyses_a_clip_from_another_folder(venv, tmp_path):
    """The API and the command line of the installed copy, run from a folder that is neither the checkout nor the
    environment: the models, templates and settings come from inside the installed package."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {**_env(venv), "FER_PIPELINE_CACHE": str(tmp_path / "cache")}
    py = str(venv / "bin" / "python")
    code = f"""
import importlib.util, json, sys
import fer_pipeline, fer_pipeline.resources as r
from pathlib import Path
assert Path(fer_pipeline.__file__).resolve().is_relative_to(Path({str(venv)!r}).resolve()), fer_pipeline.__file__
assert importlib.util.find_spec("torch") is None and importlib.util.find_spec("flows") is None
import fer_pipeline.flows.analyze  # the flows, under the package's name
res = fer_pipeline.analyze({str(CLIP)!r})
print(json.dumps({{"faces": len(res.faces), "timeline": len(res.timeline), "status": res.summary.status.tolist(),
                  "ids": sorted(set(res.faces.video_id)), "model": str(r.default_model()),
                  "templates": str(r.templates_dir()), "config": str(r.default_config()),
                  "same_config": fer_pipeline.PipelineConfig.load(r.default_config())
                                 == fer_pipeline.PipelineConfig()}}))
"""
    p = subprocess.run([py, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["status"] == ["ok"] and got["faces"] > 0 and got["timeline"] > 0
    site = str(venv.resolve())
    assert all(got[k].startswith(site) for k in ("model", "templates", "config")), got
    assert got["same_config"]  # the installed pipeline.yaml is the documented default

    h = subprocess.run([py, "-m", "fer_pipeline", "--help"], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=120)
    assert h.returncode == 0 and "analyze" in h.stdout, h.stdout + h.stderr
    out = cwd / "OUT"
    a = subprocess.run([py, "-m", "fer_pipeline", "analyze", str(CLIP), "--out", str(out), "--annotate"], cwd=cwd,
                       env=env, capture_output=True, text=True, timeout=600)
    assert a.returncode == 0, a.stdout[-2000:] + a.stderr[-4000:]
    (vid,) = got["ids"]
    report = out / "reports" / f"{vid}.html"
    assert report.is_file() and (out / "index.html").is_file()
    assert (out / "reports" / "plotly.min.js").stat().st_size == (REPO / "fer_pipeline" / "static" /
                                                                   "plotly-cartesian.min.js").stat().st_size
    assert "Model card" in report.read_text()  # the model's card, read from the installed package
    faces = pd.read_parquet(out / "faces")
    assert len(faces) == got["faces"] and set(faces["video_id"]) == {vid}
    assert pd.read_parquet(out / "videos")["status"].tolist() == ["ok"]
    import av

    with av.open(str(out / "annotated" / f"{vid}.mp4")) as c, av.open(str(CLIP)) as src:  # the annotated video
        assert c.streams.video[0].codec_context.name == "h264"
        assert abs(float(c.duration - src.duration) / 1e6) < 0.1
