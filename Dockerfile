# syntax=docker/dockerfile:1.7
# seqserve images. Targets:
#   service      ONNX Runtime + CUDA/cuDNN wheels + the committed models; no torch.  docker compose up
#   service-cpu  the same without any NVIDIA library (CPU hosts).   docker compose -f docker-compose.yml -f docker-compose.cpu.yml up
#   train        the training pipeline with torch (CUDA build from PyPI).   docker compose --profile train run train ...
# PYTHON_IMAGE: any Debian-like image with python3 (>= 3.11) and its venv module, e.g. a bookworm
# made by mmdebstrap where no registry can be reached (scripts/image_check, docs/image_check.md).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin seqserve

# The project and its dependencies into /opt/venv (re-run when pyproject, README or the code
# change). `python3`: the binary every base has (Debian's own has no `python`); the venv adds it.
FROM python-base AS service-build-cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY seqserve ./seqserve
COPY service ./service
COPY training ./training
# No extra: onnxruntime-gpu (linux x86_64; it runs on the CPU as well) without the NVIDIA wheels.
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install .

# The CPU image's venv: onnxruntime-gpu's CUDA and TensorRT provider libraries (about 285 MB)
# are never loaded with SEQSERVE_DEVICE=cpu, so they are left out.
FROM service-build-cpu AS service-venv-cpu
RUN rm -f /opt/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime_providers_cuda.so \
          /opt/venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime_providers_tensorrt.so

FROM service-build-cpu AS service-build
# The `cuda` extra adds the CUDA 13 and cuDNN 9 libraries onnxruntime-gpu loads (NVIDIA's
# pip wheels), so the image needs no CUDA base: only the host's driver, via the NVIDIA runtime.
RUN /opt/venv/bin/pip install ".[cuda]"

# What both service images share: the settings, the user, the health check. Each image then
# adds its venv, then the models (their own layer, as before).
FROM python-base AS service-runtime
WORKDIR /app
ENV SEQSERVE_MODELS_DIR=/app/models \
    SEQSERVE_HOST=0.0.0.0 \
    SEQSERVE_PORT=8000 \
    SEQSERVE_DEVICE=auto
USER 10001:10001
EXPOSE 8000
# Ready means every model is loaded and warmed up (not just that the process is alive).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
# SIGTERM: stop accepting, finish requests in flight (SEQSERVE_GRACEFUL_SHUTDOWN_S), exit 0.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]

FROM service-runtime AS service-cpu
ENV SEQSERVE_DEVICE=cpu
COPY --from=service-venv-cpu /opt/venv /opt/venv
COPY --chown=seqserve:seqserve models ./models

FROM service-runtime AS service
COPY --from=service-build /opt/venv /opt/venv
COPY --chown=seqserve:seqserve models ./models

FROM python-base AS train
WORKDIR /app
COPY pyproject.toml README.md ./
COPY seqserve ./seqserve
COPY service ./service
COPY training ./training
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install ".[train,cuda]" && chown -R seqserve:seqserve /app
ENV SEQSERVE_CACHE_DIR=/home/seqserve/.cache/seqserve \
    SEQSERVE_RUNS_DIR=/app/runs
USER 10001:10001
ENTRYPOINT ["python", "-m", "training"]
CMD ["--help"]
