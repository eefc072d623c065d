#!/usr/bin/env bash
# Build benchmarks/.fer-venv: the `fer` package (justinshenk/fer, the peer the speed benchmark compares against) in a
# venv of its own, with the fixes from shared/notes/peer-fer-package.md. pip only; idempotent (re-running is quick).
#
#   bash benchmarks/setup_fer_peer.sh            # then: benchmarks/.fer-venv/bin/python -c 'from fer.fer import FER'
#
# Why each pin:
#   fer / facenet-pytorch with --no-deps: fer asks for `tensorflow` (we want tensorflow-cpu) and facenet-pytorch 2.6
#       pins torch<2.3 / torchvision<0.18 / numpy<2 / Pillow<10.3, none of which import here. Their real run-time
#       dependencies are installed explicitly below.
#   setuptools<81: fer/fer.py imports pkg_resources, which setuptools >= 81 no longer ships.
#   opencv-contrib-python<5: 5.x has no Haar cascades in cv2/data (fer's default detector silently finds nothing).
#   torch==2.14.1 torchvision==0.29.1: from this machine's disk through pip (find-links/extra index); the CPU torch
#       2.13 + PyPI torchvision pair fails with "operator torchvision::nms does not exist".
#   tensorflow-cpu: fer's Keras emotion model.
#   no triton: see below.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${FER_VENV:-$HERE/.fer-venv}"
PYTHON="${PYTHON:-python3}"
FER_VERSION="${FER_VERSION:-25.10.3}"
FACENET_VERSION="${FACENET_VERSION:-2.6.0}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)
"${PIP[@]}" install -q --upgrade pip

echo "installing the peer's dependencies (torch from this machine's disk, tensorflow-cpu from PyPI) ..."
"${PIP[@]}" install -q \
    'setuptools<81' \
    'torch==2.14.1' 'torchvision==0.29.1' \
    'tensorflow-cpu' \
    'opencv-contrib-python<5' \
    'numpy' 'pandas' 'matplotlib' 'Pillow' 'requests' 'tqdm>=4.62.1' \
    'moviepy>=1.0.3,<2.0' 'ffmpeg-python>=0.2.0'

echo "installing fer==$FER_VERSION and facenet-pytorch==$FACENET_VERSION without their (unsatisfiable) pins ..."
"${PIP[@]}" install -q --no-deps "fer==$FER_VERSION" "facenet-pytorch==$FACENET_VERSION"

# torch 2.14.1 (CUDA build) pulls triton; importing triton after tensorflow segfaults (fer imports tensorflow, then
# facenet_pytorch -> torch -> torch._dynamo probes triton). triton only compiles GPU kernels: remove it.
if "$VENV/bin/python" -m pip show -q triton >/dev/null 2>&1; then
    echo "removing triton (segfaults when imported after tensorflow; unused on CPU)"
    "${PIP[@]}" uninstall -q -y triton
fi

# If anything above dragged opencv-python (non-contrib) or opencv 5 in, make sure cv2 is the contrib 4.x build.
"$VENV/bin/python" - <<'EOF'
import cv2, os, sys
haar = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
if not cv2.__version__.startswith("4.") or not os.path.isfile(haar):
    sys.exit(f"cv2 {cv2.__version__} lacks Haar cascades ({haar}); expected opencv-contrib-python<5")
print("cv2", cv2.__version__, "with Haar cascades")
EOF

echo "smoke test: imports, then MTCNN + the emotion model on one frame of a real clip ..."
TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" "$HERE/_fer_peer.py" --smoke
echo "ok: $VENV"
