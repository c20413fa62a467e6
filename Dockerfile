# voicemon worker / API image. The same image runs `voicemon worker` and `voicemon api ...`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY . /app
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app voicemon \
    && mkdir -p /app/var \
    && chown -R voicemon /app/var

USER voicemon
ENTRYPOINT ["voicemon"]
CMD ["--help"]
