# syntax=docker/dockerfile:1
# atri in a container: the search service (`atri serve`, the default command) and the
# corpus, index and training jobs, all from one image (docs/deploy.md).
#
#   docker build -t atri:cpu .                  CPU, the default target
#   docker build --target gpu -t atri:gpu .     CUDA torch and faiss-gpu
#
# Stages: `source` holds what pip installs; `venv-cpu` and `venv-gpu` build /opt/venv
# from wheels only (no compiler); `runtime` adds the Debian packages and the non-root
# user; the targets `gpu` and `cpu` (last, hence the default) copy their venv into it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TORCH_VERSION=2.13.0
ARG AISFX_VERSION=0.1.2

FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY src/ /src/src/
COPY training/ /src/training/
COPY index/ /src/index/
COPY service/ /src/service/

FROM ${PYTHON_IMAGE} AS venv-base
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv

FROM venv-base AS venv-cpu
# The CPU wheel, from the PyTorch index: PyPI's torch is the CUDA build (gigabytes of
# CUDA libraries). Installed first, so that the project's `torch` range is satisfied.
ARG TORCH_VERSION
ARG AISFX_VERSION
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY --from=source /src /src
# aisfx without its dependencies: its pins are years old and only its packaged
# checkpoint (CC BY 4.0) is read (docs/install.md).
RUN pip install --no-cache-dir /src \
 && pip install --no-cache-dir --no-deps "aisfx==${AISFX_VERSION}"

FROM venv-base AS venv-gpu
# PyPI's torch 2.13.0 is the CUDA 13.0 build and faiss-gpu 1.15.1 brings CUDA 12
# libraries: both runtimes ship as wheels, so the base image needs no CUDA, and a host
# driver recent enough for CUDA 13 (>= 580) runs both. Another CUDA build of torch:
# --build-arg TORCH_GPU_INDEX_URL=https://download.pytorch.org/whl/cu128 (for example).
ARG TORCH_VERSION
ARG AISFX_VERSION
ARG TORCH_GPU_INDEX_URL=https://pypi.org/simple
ARG FAISS_GPU_VERSION=1.15.1
RUN pip install --no-cache-dir --index-url "${TORCH_GPU_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY --from=source /src /src
# faiss-gpu provides the same `faiss` module as the faiss-cpu dependency: swap them.
RUN pip install --no-cache-dir /src \
 && pip uninstall --yes faiss-cpu \
 && pip install --no-cache-dir "faiss-gpu==${FAISS_GPU_VERSION}" \
 && pip install --no-cache-dir --no-deps "aisfx==${AISFX_VERSION}"

FROM ${PYTHON_IMAGE} AS runtime
# libsndfile1: audio decoding. fluidsynth, its library and the two soundfonts: `atri
# corpus build` renders the demo corpus (FluidR3 GM, MIT; TimGM6mb, GPL-2). No Debian
# ffmpeg: browser uploads (webm/opus, m4a) decode with the binary of the imageio-ffmpeg
# wheel. User 10001 owns /data/*: named volumes start as copies of these folders, so
# the jobs can write into fresh volumes without root.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      fluid-soundfont-gm \
      fluidsynth \
      libfluidsynth3 \
      libsndfile1 \
      timgm6mb-soundfont \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --no-log-init --uid 10001 --user-group atri \
 && mkdir -p /data/corpus /data/index /data/runs \
 && chown -R atri:atri /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ATRI_HOST=0.0.0.0 \
    ATRI_PORT=8000 \
    ATRI_INDEX_DIR=/data/index
WORKDIR /home/atri
USER 10001:10001
EXPOSE 8000
# /health answers 503 while the model and index load, 200 when ready; urlopen raises
# on both a refused connection and a non-2xx status, so the exit code says it all.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('ATRI_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["atri"]
CMD ["serve"]

FROM runtime AS gpu
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=venv-gpu /opt/venv /opt/venv
# Fail the build, not the first request, when something the commands need is missing:
# the subcommands, the default checkpoint (package data), fluidsynth, the ffmpeg binary.
RUN atri serve --help >/dev/null \
 && python -c "import faiss, fluidsynth, imageio_ffmpeg; from atri.training.encoders.checkpoint import default_checkpoint_dir as d; assert (d() / 'model.safetensors').is_file(), d(); imageio_ffmpeg.get_ffmpeg_exe()"

FROM runtime AS cpu
COPY --from=venv-cpu /opt/venv /opt/venv
RUN atri serve --help >/dev/null \
 && python -c "import faiss, fluidsynth, imageio_ffmpeg; from atri.training.encoders.checkpoint import default_checkpoint_dir as d; assert (d() / 'model.safetensors').is_file(), d(); imageio_ffmpeg.get_ffmpeg_exe()"
