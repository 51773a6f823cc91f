# pggit-exporter: a small image that runs as an unprivileged user and reports its own health.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip install . \
 && rm -rf /src \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/pggit-exporter \
            --create-home --shell /usr/sbin/nologin pggit

USER 10001:10001
WORKDIR /var/lib/pggit-exporter
EXPOSE 9863

# /healthz answers while the process serves; readiness (/readyz) is for orchestrators.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9863/healthz', timeout=4)"]

ENTRYPOINT ["pggit-exporter"]
CMD ["run", "--config", "/etc/pggit-exporter/config.yml"]
