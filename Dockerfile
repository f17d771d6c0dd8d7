# promptrecord: one image for every process (serve, worker, projector); docker-compose.yml
# picks the process with `command:`. Configuration comes only from PROMPTRECORD_* variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY . .
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin promptrecord \
    && rm -rf /src

# Relative defaults (the embedded SQLite file, the admin key file) land in the user's home.
USER promptrecord
WORKDIR /home/promptrecord

EXPOSE 8000
CMD ["promptrecord", "serve", "--host", "0.0.0.0", "--port", "8000"]
