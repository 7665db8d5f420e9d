#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian machine: system packages
# (soundfonts, libsndfile, fluidsynth) and a virtual environment at $VENV with the
# project and its dev tools. Safe to re-run; fast when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
APT_PACKAGES=(fluidsynth libfluidsynth3 fluid-soundfont-gm timgm6mb-soundfont libsndfile1)
# more soundfonts (and TiMidity++, which plays freepats) for `atri corpus build
# --train-soundfonts` (training clips only; not in the runtime image, which builds no corpus)
APT_CORPUS_PACKAGES=(musescore-general-soundfont fluidr3mono-gm-soundfont opl3-soundfont freepats timidity)
# test-only: the web page's browser test (not in the runtime image)
APT_TEST_PACKAGES=(chromium chromium-driver)

missing=()
for pkg in "${APT_PACKAGES[@]}" "${APT_CORPUS_PACKAGES[@]}" "${APT_TEST_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$VENV/.atri-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/install.sh ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP=("$VENV/bin/pip" install -q --disable-pip-version-check)
# Some machines' pip config lists local mirror folders that do not exist: pip warns
# once per package. Keep the log readable; real errors still pass through.
exec 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
# The CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
"${PIP[@]}" "torch==${ATRI_TORCH_VERSION:-2.13.0}"
"${PIP[@]}" -e ".[dev]"
# aisfx (pretrained sound-effects CNN, CC BY 4.0): its own pins are years old and
# unneeded, since we only read its packaged checkpoint.
"${PIP[@]}" --no-deps "aisfx==0.1.2"
touch "$stamp"
