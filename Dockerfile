# syntax=docker/dockerfile:1
#
# One image for every abgate role. The entrypoint is the `abgate` CLI:
#   docker run IMAGE                          -> the proxy on :8080 (default)
#   docker run -e ABGATE_HEALTH_PORT=8081 IMAGE admin --host 0.0.0.0 --port 8081
#   docker run IMAGE migrate up               (then: partitions ensure --ahead 3)
#   docker run IMAGE mock-upstream --host 0.0.0.0 --port 9100
#
# Runs as uid 10001 with a read-only root filesystem: it writes only to /tmp
# (tmpfs / emptyDir) and to the /var/lib/abgate volume (the recorder's spool).
# Pin the base by digest in production: --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: the project's wheel and all dependency wheels, installed into a venv.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sql/ sql/
COPY abgate/ abgate/
COPY proxy/ proxy/
COPY admin/ admin/
# The venv has no pip of its own (less to ship, nothing to upgrade in place); the
# builder's pip installs into it. pip byte-compiles on install, so the read-only
# runtime never needs to write a .pyc.
RUN pip wheel --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/abgate \
 && pip --python /opt/abgate/bin/python install --no-index --find-links /wheels abgate \
 && /opt/abgate/bin/abgate --help > /dev/null

# --- runtime
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="abgate" \
      org.opencontainers.image.description="Blind A/B experiments of unreleased LLM checkpoints behind an LLM gateway" \
      org.opencontainers.image.licenses="Apache-2.0"

# Numeric uid/gid so Kubernetes can verify runAsNonRoot. The spool and the
# Prometheus multiprocess directory exist (owned by the user) for a plain
# `docker run`; Kubernetes mounts emptyDirs over them.
RUN groupadd --system --gid 10001 abgate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin abgate \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/abgate /var/lib/abgate/spool \
 && install -d -o 10001 -g 10001 -m 0700 /tmp/abgate-prometheus

COPY --from=builder /opt/abgate /opt/abgate

ENV PATH="/opt/abgate/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PROMETHEUS_MULTIPROC_DIR=/tmp/abgate-prometheus \
    ABGATE_SPOOL_DIR=/var/lib/abgate/spool \
    ABGATE_HEALTH_PORT=8080 \
    ABGATE_HEALTH_PATH=/healthz

WORKDIR /var/lib/abgate
VOLUME ["/var/lib/abgate"]
USER 10001:10001
EXPOSE 8080 8081

# stdlib only (no curl in a slim image). ABGATE_HEALTH_PORT=8081 for the admin.
# Any non-2xx answer or connection error raises, and python exits 1 (unhealthy).
# The empty ProxyHandler keeps an inherited HTTP_PROXY from hijacking the probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os,urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:'+os.environ.get('ABGATE_HEALTH_PORT','8080')+os.environ.get('ABGATE_HEALTH_PATH','/healthz'),timeout=4)"]

ENTRYPOINT ["abgate"]
CMD ["proxy", "--host", "0.0.0.0", "--port", "8080"]
