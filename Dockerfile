# syntax=docker/dockerfile:1
# The gocd-ha-operator image. One image, several commands: `run` (the operator Deployment) and
# `sync-agent`, `restore`, `install-addon` (containers the operator adds to GoCD pods, which run as
# uid 1000 gid 0). So nothing here may depend on the uid: files are world-readable, nothing is
# written outside /tmp, HOME is /tmp.
#
# Build: docker build -t ghcr.io/gocd-ha-operator/gocd-ha-operator:0.1.0 .
#
# Base image pinned by tag and digest. The digest is the multi-arch index of
# python:3.12.12-slim-bookworm as pinned in several public repositories; it could not be checked
# against the registry from the machine this was written on (no registry access). Re-check it when
# bumping: docker buildx imagetools inspect python:3.12.12-slim-bookworm
# Written out in both FROM lines (not an ARG) so that static checks can see the pin.

# --- build: the project's wheel and the wheels of its dependencies -------------------------------
FROM python:3.12.12-slim-bookworm@sha256:593bd06efe90efa80dc4eee3948be7c0fde4134606dd40d8dd8dbcade98e669c AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the package installed from those wheels, nothing else --------------------------------
FROM python:3.12.12-slim-bookworm@sha256:593bd06efe90efa80dc4eee3948be7c0fde4134606dd40d8dd8dbcade98e669c
LABEL org.opencontainers.image.title="gocd-ha-operator" \
      org.opencontainers.image.description="Kubernetes operator for a GoCD server with a replicated standby" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/tmp
# --no-index: only the wheels built above are installed, so the runtime stage fetches nothing.
# The wheels are bind-mounted, not copied, so they do not stay in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels gocd-ha-operator \
 && groupadd --system --gid 10001 gocdha \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin gocdha \
 && gocd-ha-operator --help >/dev/null
# Numeric, so that Kubernetes can verify runAsNonRoot without resolving a name.
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 8081
ENTRYPOINT ["gocd-ha-operator"]
CMD ["run", "--all-namespaces", "--liveness", "http://0.0.0.0:8080/healthz"]
