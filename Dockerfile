# syntax=docker/dockerfile:1.7
# seqserve images. Targets:
#   service  (default) ONNX Runtime + the committed models; no torch.   docker compose up
#   train    the training pipeline with torch (CUDA build from PyPI).   docker compose --profile train run train ...
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS python-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin seqserve

# Dependencies first (cached while only code changes), then the code itself.
FROM python-base AS service-build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY seqserve ./seqserve
COPY service ./service
COPY training ./training
# The `cuda` extra adds the CUDA 13 and cuDNN 9 libraries onnxruntime-gpu loads (NVIDIA's
# pip wheels), so the image needs no CUDA base: only the host's driver, via the NVIDIA runtime.
RUN python -m venv /opt/venv && pip install ".[cuda]"

FROM python-base AS service
COPY --from=service-build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=seqserve:seqserve models ./models
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

FROM python-base AS train
WORKDIR /app
COPY pyproject.toml README.md ./
COPY seqserve ./seqserve
COPY service ./service
COPY training ./training
RUN python -m venv /opt/venv && pip install ".[train,cuda]" && chown -R seqserve:seqserve /app
ENV SEQSERVE_CACHE_DIR=/home/seqserve/.cache/seqserve \
    SEQSERVE_RUNS_DIR=/app/runs
USER 10001:10001
ENTRYPOINT ["python", "-m", "training"]
CMD ["--help"]
