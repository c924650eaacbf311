# statefulstream and its examples, for docker-compose.yml.
#
# Two stages: wheels are built where compilers are (some dependencies may
# have no wheel for the platform), and the runtime image gets only the
# virtualenv and the examples, runs as an unprivileged user, and has no
# build tools. Build: docker build -t statefulstream .
#
# Reproducible: base images are pinned by version, and Python packages are installed at the exact
# versions of constraints.txt (see its header to regenerate it).

FROM python:3.11.7-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY statefulstream ./statefulstream
COPY sinks ./sinks
RUN pip install -c constraints.txt ".[kafka,cassandra,webhook,parquet]"

FROM python:3.11.7-slim-bookworm
# Checkpoint mount points exist and belong to the app user, so fresh named volumes inherit that owner.
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin app \
    && mkdir -p /checkpoints/sessions /checkpoints/alerts \
    && chown -R app:app /checkpoints
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY examples ./examples
USER app
EXPOSE 9108
CMD ["python", "examples/sessionization.py"]
