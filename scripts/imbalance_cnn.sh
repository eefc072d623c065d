#!/usr/bin/env bash
# Class-imbalance remedies for the CNN, measured (training issue, item 2): fine-tunes the stage-1 model with each
# remedy (configs/train/fer2013_vgg_imbalance.yaml) and prints PublicTest / PrivateTest accuracy and macro-F1
# (flip TTA, torch) and the disgust F1. Needs runs/fer2013-vgg/emotion-fer2013-vgg-base.onnx (fer2013_vgg.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
for v in "none none" "sqrt none" "none weighted"; do   # add "inverse none" for the strongest class weighting
    set -- $v
    out="runs/imbalance-cw_$1-sampler_$2"
    .venv/bin/fer-pipeline train --config configs/train/fer2013_vgg_imbalance.yaml --quiet \
        --set imbalance.class_weights=$1 --set imbalance.sampler=$2 --set out_dir=$out > "$out.log" 2>&1 \
        || { echo "variant $v failed: see $out.log"; exit 1; }
done
"$PY" - <<'PY'
import json, pathlib
print(f"{'class_weights':>13} {'sampler':>8} | {'Public acc':>10} {'macro-F1':>8} | {'Private acc':>11} {'macro-F1':>8} | disgust F1")
for d in sorted(pathlib.Path("runs").glob("imbalance-cw_*")):
    if not (d / "metrics.json").is_file():
        continue
    m = json.loads((d / "metrics.json").read_text())
    cw, sm = d.name.split("cw_")[1].split("-sampler_")
    v, t = m["val"], m["test"]
    print(f"{cw:>13} {sm:>8} | {v['accuracy']:>10.2%} {v['macro_f1']:>8.3f} | {t['accuracy']:>11.2%} "
          f"{t['macro_f1']:>8.3f} | {t['per_class']['disgust']['f1']:.3f}")
PY
