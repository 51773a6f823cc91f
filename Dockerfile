# pggit-exporter: a small image that runs as an unprivileged user and reports its own health.
# No demo PostgreSQL: `pip install .` leaves out the `demo` extra (pgserver). The root
# filesystem can be mounted read-only: nothing is written outside the state directory.
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
VOLUME /var/lib/pggit-exporter
EXPOSE 9863

# The probe reads the same config (and web config) as the exporter, so it follows its port,
# TLS and basic auth (a 401 still proves the server is up; see `healthcheck --help`).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["pggit-exporter", "healthcheck", "--config", "/etc/pggit-exporter/config.yml"]

ENTRYPOINT ["pggit-exporter"]
CMD ["run", "--config", "/etc/pggit-exporter/config.yml"]
