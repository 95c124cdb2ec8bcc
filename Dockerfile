# syntax=docker/dockerfile:1
# The rfcls service with its bundled model, CPU or CUDA by build argument:
#   docker build -t rfcls:0.1.0-cpu .
#   docker build --build-arg TORCH_VARIANT=cu128 -t rfcls:0.1.0-cuda .
# TORCH_VARIANT names a PyTorch wheel index (cpu, cu126, cu128, ...). The CUDA wheels bring their
# own CUDA libraries as pip packages, so both variants share the slim Python base; a GPU host needs
# only the NVIDIA driver and container toolkit. docs/deploy.md has the rest.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_VARIANT=cpu
# must equal the torch pin in requirements/lock.txt (tests/deploy checks)
ARG TORCH_VERSION=2.13.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src

# torch alone first, from the index of the chosen variant and without its dependencies: it is most
# of the image and changes least, so it gets its own layer. Its dependencies (the nvidia-* runtime
# libraries for CUDA) then resolve from PyPI together with the project's, under the lock.
RUN pip install --no-deps --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        "torch==${TORCH_VERSION}"

COPY requirements/lock.txt requirements/lock.txt
COPY pyproject.toml ./
# The project's dependencies next, read from pyproject alone: a layer that a change to the code
# (or the README) leaves cached, so such a build reinstalls only the code.
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/dependencies.txt \
    && pip install --constraint requirements/lock.txt --requirement /tmp/dependencies.txt
COPY README.md ./
COPY preprocessing preprocessing
COPY rfmodel rfmodel
COPY service service
COPY benchmarks benchmarks
# a regular (not editable) install: package data, the bundled weights among it, lands in the venv
RUN pip install --no-deps --constraint requirements/lock.txt . \
    && pip check


FROM ${PYTHON_IMAGE} AS runtime
ARG TORCH_VARIANT=cpu
# CUDA builds: Triton, which torch.compile and the flash kernel (bf16 on the GPU) compile with,
# builds a small C launcher at first use and fails without a C compiler, which slim images lack.
# hadolint ignore=DL3008
RUN if [ "${TORCH_VARIANT}" != cpu ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends gcc libc6-dev \
        && rm -rf /var/lib/apt/lists/*; \
    fi
# HOME=/tmp: with a read-only root filesystem, /tmp (an emptyDir in Kubernetes, a tmpfs in
# compose) is the only place torch and matplotlib may write their caches.
# NVIDIA_DRIVER_CAPABILITIES: the container toolkit mounts only nvidia-smi's libraries unless told
# the image computes; it is ignored on hosts without the toolkit.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    RFCLS_HOST=0.0.0.0 \
    RFCLS_PORT=8000
RUN groupadd --system --gid 10001 rfcls \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin rfcls
COPY --from=build /opt/venv /opt/venv
WORKDIR /
# fail the build, not the first pod, if the weights did not make it into the installed package
RUN python -c "import pathlib, rfmodel; \
found = sorted(pathlib.Path(rfmodel.__file__).parent.glob('weights/*/model.safetensors')); \
assert found, 'no bundled weights under rfmodel/weights/*/'; print(*found, sep='\n')"

USER 10001:10001
EXPOSE 8000
# 503 until warmed up and while draining; urllib raises on it, so the exit status follows readiness
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz/ready' % os.environ.get('RFCLS_PORT', '8000'), timeout=2)"]
# exec form: rfcls (uvicorn) is PID 1 and receives SIGTERM itself, then drains before exiting
ENTRYPOINT ["rfcls"]
CMD ["serve"]
