# One image for every Sentinel process: workers, monitor, metrics, Flower and the local GitHub hub.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SENTINEL_CONFIG_DIR=/app/config

WORKDIR /app
COPY pyproject.toml README.md ./
COPY sentinel_celery ./sentinel_celery
COPY workers ./workers
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 sentinel
COPY config ./config

USER sentinel
# metrics, Flower, hub
EXPOSE 9808 5555 8765
CMD ["sentinel", "--help"]
