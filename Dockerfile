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

# What every role shares: an unprivileged user, a writable var/ and the wheel.
FROM python AS role
RUN useradd --system --uid 10001 --home-dir /app voicemon \
    && mkdir -p /app/var \
    && chown -R voicemon /app/var
WORKDIR /app
COPY --from=wheel /wheels /wheels
ENTRYPOINT ["voicemon"]
CMD ["--help"]

FROM role AS api
COPY requirements/api.lock /tmp/role.lock
RUN pip install --require-hashes -r /tmp/role.lock \
    && pip install --no-index --find-links /wheels "voicemon[api]"
USER voicemon

FROM role AS embedded
COPY requirements/embedded.lock /tmp/role.lock
RUN pip install --require-hashes -r /tmp/role.lock \
    && pip install --no-index --find-links /wheels "voicemon[worker,embedded]"
USER voicemon

FROM role AS worker
COPY requirements/worker.lock /tmp/role.lock
RUN pip install --require-hashes -r /tmp/role.lock \
    && pip install --no-index --find-links /wheels "voicemon[worker]"
USER voicemon
