# One image for every engine process; the command picks the process (see docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
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
RUN pip install --no-cache-dir . && useradd --system --uid 10001 fulfillment
USER fulfillment
ENV LOG_FORMAT=json
ENTRYPOINT ["fulfillment"]
