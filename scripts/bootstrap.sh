#!/usr/bin/env bash
# Creates .venv and installs the project (idempotent: `make` only calls this when
# a requirements file or setup.py is newer than the .venv stamp).
#
# Why not a single `pip install -e .[test]`: descript-audio-codec/-audiotools
# declare protobuf<3.20 while grain needs protobuf>=5.28.3 (audiotools never
# imports protobuf), so they go in with --no-deps and their real dependencies
# are listed in requirements/base.txt; mamba-ssm (the parity reference) must be
# built without CUDA and without build isolation, after torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
start=$(date +%s)
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip wheel setuptools
$PIP install --quiet -r requirements/torch.txt
$PIP install --quiet -r requirements/torch.txt -r requirements/base.txt -r requirements/test.txt
$PIP install --quiet --no-deps -r requirements/nodeps.txt
MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE \
  $PIP install --quiet --no-build-isolation -r requirements/mamba.txt
$PIP install --quiet --no-deps --no-build-isolation -e .
.venv/bin/python -c "import jax, flax, optax, grain, torch, torchaudio, dac, h5py, neurocodec_jax, codec_bridge"
touch .venv/.installed
echo "bootstrap: .venv ready in $(( $(date +%s) - start )) s ($(du -sh .venv | cut -f1))"
