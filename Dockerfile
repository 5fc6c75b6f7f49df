# agentwatch: the `agentwatch` command (process, simulate, sql, contract, ...) in an image.
#
#   docker build -t agentwatch .
#   docker run --rm agentwatch --help
#   docker run --rm -v agentwatch-data:/data agentwatch process --bootstrap HOST:9092
#
# The Kafka broker is not in this image (`agentwatch broker` needs Java and the Kafka
# jars): run the official apache/kafka image beside it, as docker-compose.yml does.

# --- build: a wheel from the source tree (.dockerignore keeps the venv, data and caches out)
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

COPY . /src
RUN pip wheel --no-deps --wheel-dir /wheels /src

# --- runtime: the wheel and its dependencies, installed normally (not editable)
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    AGENTWATCH_STORAGE_DB=/data/agentwatch.duckdb

RUN groupadd --system --gid 10001 agentwatch \
    && useradd --system --uid 10001 --gid agentwatch --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin agentwatch \
    && mkdir /data \
    && chown agentwatch:agentwatch /data

COPY --from=build /wheels /tmp/wheels
RUN pip install /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && agentwatch --version

# The DuckDB catalog and its Parquet segments (and anything else a command writes).
# A new named volume mounted here starts out owned by the agentwatch user.
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001

# Exec form: the command is PID 1 and gets SIGTERM itself (`process` then lands what it
# holds and exits cleanly).
ENTRYPOINT ["agentwatch"]
CMD ["--help"]
