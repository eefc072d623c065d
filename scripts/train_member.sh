#!/usr/bin/env bash
# Train one more FER2013 ensemble member: the default model's two recipes (configs/train/fer2013_vgg.yaml, 30 epochs
# from scratch, then fer2013_vgg_swa.yaml, 8 epochs of weight-averaged fine-tuning) with another seed, then copy the
# exported model and its card into models/members/ (models/members/README.md).
#
# Usage: bash scripts/train_member.sh SEED     (about 90 min of both cores on the 2-core Xeon)
# Resumable: re-run the same command; a stage whose exported model card exists is skipped, an interrupted one
# resumes from its last.ckpt.
set -euo pipefail
seed=${1:?usage: bash scripts/train_member.sh SEED (an integer other than 0: seed 0 is the shipped model)}
FP=${FP:-.venv/bin/fer-pipeline}
name=fer2013-vgg-seed$seed
s1=runs/$name
s2=runs/$name-swa
base=$s1/emotion-$name-base.onnx
final=$s2/emotion-$name.onnx

if [ ! -f "${base%.onnx}.json" ]; then  # the card is written last
  "$FP" train --config configs/train/fer2013_vgg.yaml --set "seed=$seed" --set "name=$name" \
    --set "out_dir=$s1" --set "export_onnx=$base"
fi
if [ ! -f "${final%.onnx}.json" ]; then
  "$FP" train --config configs/train/fer2013_vgg_swa.yaml --set "seed=$seed" --set "name=$name" \
    --set "out_dir=$s2" --set "init_from=$base" --set "export_onnx=$final"
fi
mkdir -p models/members
cp "$final" "${final%.onnx}.json" models/members/
echo "member $name: models/members/$(basename "$final")"
