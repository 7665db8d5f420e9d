#!/usr/bin/env bash
# Build the separate virtualenv for the optional SONAR text encoder.
#
# Why a separate env: sonar-space needs fairseq2n, whose PyPI wheel pins an exact
# torch (0.8.1 -> torch==2.9.1, the CUDA build from PyPI, ~7 GB with its nvidia-*
# wheels), which would clash with the project's torch 2.13 CPU env.
#
# Usage:  bash scripts/sonar_env.sh            # builds $HOME/.cache/atri/sonar-venv
#         ATRI_SONAR_VENV=/some/dir bash scripts/sonar_env.sh
# Then:   "$ATRI_SONAR_VENV/bin/pytest" -m sonar tests/training/test_text_encoder_sonar.py
#
# Overridable: ATRI_SONAR_VENV (target dir), PYTHON (interpreter, 3.10-3.12; fairseq2n
# has no wheels beyond that), ATRI_SONAR_SPEC (pip requirement for sonar-space).
# System need: libsndfile1 (fairseq2n dlopens it): `apt-get install libsndfile1`.
set -euo pipefail

VENV="${ATRI_SONAR_VENV:-$HOME/.cache/atri/sonar-venv}"
PYTHON="${PYTHON:-python3.11}"
SONAR_SPEC="${ATRI_SONAR_SPEC:-sonar-space==0.5.0}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if ! ldconfig -p 2>/dev/null | grep -q 'libsndfile\.so\.1'; then
    echo "sonar_env: libsndfile.so.1 not found; install it (apt-get install libsndfile1)" >&2
    exit 1
fi

mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/pip" install --disable-pip-version-check)

"${PIP[@]}" --upgrade pip
# sonar-space first, so that fairseq2n's exact torch pin decides torch.
"${PIP[@]}" "$SONAR_SPEC"
# Then this project (editable, with test tools), keeping the torch already chosen:
# the project's range (torch>=2.5,<2.15) admits it, and a resolver upgrade would
# break fairseq2n's native extension.
# (The distribution version, not torch.__version__, which carries a +cu128 tag.)
TORCH_VERSION="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')"
# sentencepiece: the SONAR test trains a tiny tokenizer model.
"${PIP[@]}" -e "$REPO[dev]" "torch==$TORCH_VERSION" sentencepiece

"$VENV/bin/python" - <<'EOF'
import importlib.metadata as md

import torch
from sonar.models.sonar_text import get_sonar_text_encoder_hub  # noqa: F401

import atri.training.encoders.text_encoder  # noqa: F401

print("sonar-space", md.version("sonar-space"), "fairseq2", md.version("fairseq2"),
      "torch", torch.__version__)
EOF
echo "sonar_env: ready at $VENV"
