# coze-discord-proxy all in one: `cdp serve` (OpenAI API + Discord listener, in-memory state), the way
# the original is run on one host. Build from the repository root, then see docker-compose.yml:
#   docker build -t coze-discord-proxy-py .
# Base image pinned by exact tag (Python 3.13.7, Debian 12 slim, linux/amd64 for requirements-image.lock);
# to pin its digest too: docker buildx imagetools inspect python:3.13.7-slim-bookworm
FROM python:3.13.7-slim-bookworm

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 PORT=7077
# The original's working directory: its compose file mounts ./data here (data/config/bot_config.json,
# re-hosted images in data/files).
WORKDIR /app/coze-discord-proxy

# The pinned dependencies (requirements-image.lock, with hashes: `make lock`), then the package alone.
COPY requirements-image.lock ./requirements.lock
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml ./
COPY layers/common/cdp ./layers/common/cdp
RUN pip install --no-deps . \
    && useradd --uid 10001 --no-create-home cdp \
    && mkdir -p data/files data/config && chown -R cdp data

USER 10001
EXPOSE 7077
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '7077')}/healthz\", timeout=3)"]
CMD ["cdp", "serve"]
