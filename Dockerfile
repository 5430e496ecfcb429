# syntax=docker/dockerfile:1
# Multi-stage: build a wheel and its dependencies once, install them into a slim runtime as non-root.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip "setuptools>=77" wheel
COPY pyproject.toml README.md ./
COPY core ./core
COPY bus ./bus
COPY sdk ./sdk
COPY checks ./checks
COPY plugins ./plugins
COPY integrations ./integrations
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
RUN apt-get update && apt-get install -y --no-install-recommends curl libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 mlp
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY plugins.toml /app/plugins.toml
# The whole data directory (models, features, market state, keys, tokens, audit.log) is one volume: /data.
RUN mkdir -p /data && chown mlp:mlp /data
VOLUME ["/data"]
USER mlp
# Authentication on, so listening on every interface is allowed: on the first start the service creates its
# CURVE key pair and an admin token in /data/security and prints the token once (docker logs; docs/SECURITY.md).
ENV PYTHONUNBUFFERED=1 \
    ENV=production \
    MLP_CONFIG=/app/plugins.toml \
    MLP_SERVICE_DATA_DIR=/data \
    MLP_SECURITY_AUTH=true \
    MLP_SECURITY_BOOTSTRAP_ADMIN=true \
    MLP_EDGE_HOST=0.0.0.0 \
    MLP_BUS_BROKER_BIND=tcp://0.0.0.0:5555 \
    MLP_BUS_PUB_IN=tcp://0.0.0.0:5556 \
    MLP_BUS_PUB_OUT=tcp://0.0.0.0:5557 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1
EXPOSE 8006 5555 5556 5557
# /health is a public route ([security] public_routes): no token needed. The first start trains the default
# models (start period).
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
  CMD curl -fsS http://localhost:8006/health || exit 1
CMD ["ml-processing", "serve"]
