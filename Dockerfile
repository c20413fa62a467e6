# voicemon images, one per role, each installing exactly the pinned, hash-checked versions of
# its lock (requirements/<role>.lock, `make lock`) and then voicemon's own wheel with the
# role's extras (--no-index: a dependency missing from the lock fails the build).
#
#   docker build --target api      -t voicemon-api .       # voicemon api, topics ensure, CLI
#   docker build --target worker   -t voicemon-worker .    # voicemon worker (+ its API); no chDB
#   docker build --target embedded -t voicemon-embedded .  # worker + chDB (~560 MB), one host
#
# With a ClickHouse server (VOICEMON_CLICKHOUSE_DSN=http://...) use api and worker: neither
# carries chDB. The default target is worker.
FROM python:3.11-slim AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# voicemon's wheel, built with the setuptools pinned in requirements/build.lock.
FROM python AS wheel
WORKDIR /src
COPY requirements/build.lock requirements/build.lock
RUN pip install --require-hashes -r requirements/build.lock
COPY pyproject.toml README.md ./
COPY voicemon voicemon
COPY consumers consumers
COPY aggregators aggregators
COPY runtime runtime
COPY producer/voicemon_producer producer/voicemon_producer
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# What every role shares: an unprivileged user, a writable var/ and the wheel, and the OCI
# labels (docker build --build-arg REVISION=$(git rev-parse HEAD) --build-arg
# CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) ...; VERSION = the version in pyproject.toml).
FROM python AS role
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="voicemon" \
      org.opencontainers.image.description="Monitoring of a voice pipeline's Kafka events: Faust workers, Redis rolling counters, ClickHouse snapshots, query API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"
RUN useradd --system --uid 10001 --home-dir /app voicemon \
    && mkdir -p /app/var \
    && chown -R voicemon /app/var
WORKDIR /app
COPY --from=wheel /wheels /wheels
ENTRYPOINT ["voicemon"]
CMD ["--help"]

FROM role AS api
LABEL org.opencontainers.image.title="voicemon-api" \
      org.opencontainers.image.description="voicemon: the query API, topics ensure and the CLI"
COPY requirements/api.lock /tmp/role.lock
RUN pip install --require-hashes -r /tmp/role.lock \
    && pip install --no-index --find-links /wheels "voicemon[api]"
USER voicemon

FROM role AS embedded
LABEL org.opencontainers.image.title="voicemon-embedded" \
      org.opencontainers.image.description="voicemon: worker and API with the embedded store (chDB)"
COPY requirements/embedded.lock /tmp/role.lock
RUN pip install --require-hashes -r /tmp/role.lock \
    && pip install --no-index --find-links /wheels "voicemon[worker,embedded]"
USER voicemon

FROM role AS worker
LABEL org.opencontainers.image.title="voicemon-worker" \
      org.opencontainers.image.description="voicemon: the Faust worker (and its API); no chDB"
COPY requirements/worker.lock /tmp/role.lock
RUN pip install --require-hashes -r /tmp/role.lock \
    && pip install --no-index --find-links /wheels "voicemon[worker]"
USER voicemon
