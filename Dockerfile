# syntax=docker/dockerfile:1
# One image for every engine process: worker, listener, api, migrate (the command picks the
# process: docker-compose.yml); docs/deployment.md says how to run it. Two targets:
#   production (the default, the last stage): the project without extras, as `pip install
#     order-fulfillment` gives it: no dev-stack server, none of the emulators' own packages;
#   emulators (`docker build --target emulators`): the same plus the `dev` extra, for the
#     emulators of the compose file's `emulators` profile and their certificate job.
# Every package comes from requirements/ at its exact version, checked against its hashes.

# --- build: a virtualenv holding the engine and the dependencies it runs with ------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src

# Dependencies in a layer of their own, so a code change does not reinstall them: the pins of
# requirements/runtime.txt (`make pins`), each file checked against its hash. Only published
# wheels (--only-binary): the slim image has no compiler, and a dependency that would need one
# should fail the build here, not surprise a deploy.
COPY requirements/runtime.txt requirements/runtime.txt
RUN python -m venv /opt/fulfillment \
    && /opt/fulfillment/bin/pip install --require-hashes --only-binary=:all: \
        --requirement requirements/runtime.txt

COPY pyproject.toml README.md ./
COPY domain domain
COPY workflows workflows
COPY activities activities
COPY workers workers
COPY clients clients
COPY cdc_listener cdc_listener
COPY config config
COPY temporal_connection temporal_connection
COPY usecases usecases
COPY api api
COPY emulators emulators
COPY migrations migrations
COPY cli cli
COPY devstack devstack
COPY wire wire
# --no-deps: everything it needs is in, pinned; --no-build-isolation: with the pinned setuptools.
RUN /opt/fulfillment/bin/pip install --no-deps --no-build-isolation . \
    && /opt/fulfillment/bin/fulfillment --help > /dev/null

# --- emulators-build: the same virtualenv plus the `dev` extra, pinned likewise ---------------
FROM build AS emulators-build
COPY requirements/dev.txt requirements/dev.txt
RUN /opt/fulfillment/bin/pip install --require-hashes --only-binary=:all: \
        --requirement requirements/dev.txt \
    && /opt/fulfillment/bin/fulfillment emulate --help > /dev/null

# --- base: a fresh slim base for the virtualenv, run by an unprivileged user -------------------
FROM python:3.11-slim AS base
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
# Settings come from the environment. The working directory is empty and not writable, so no
# `.env` there is ever read by accident.
WORKDIR /app
USER 10001:10001
# API (with /metrics), worker metrics, listener metrics; the emulators' ports are the demo's.
EXPOSE 8000 9101 9102
ENTRYPOINT ["fulfillment"]

# --- emulators: the demo's Salesforce, WHMCS and Freebit stand-ins (compose profile) ----------
FROM base AS emulators
COPY --from=emulators-build /opt/fulfillment /opt/fulfillment

# --- production: the engine alone (the default target) ---------------------------------------
FROM base AS production
COPY --from=build /opt/fulfillment /opt/fulfillment
