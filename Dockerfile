# reaper in a container (docs/scale.md, "Containers and Kubernetes").
#
#   docker build -t reaper .
#   docker run --read-only --cap-drop ALL --security-opt no-new-privileges \
#     -v reaper-audit:/var/lib/reaper -v /etc/reaper:/etc/reaper:ro reaper run --once
#
# The runtime image holds the locked dependencies (requirements.lock, installed with
# --require-hashes) and reaper itself (--no-deps, so nothing unlocked slips in), runs as an
# unprivileged user, and writes only to /var/lib/reaper (the audit log: mount a volume there)
# and /tmp (mount a tmpfs when the root file system is read-only). No compiler, no pip cache.

# -- build: a virtual environment from the lock -----------------------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/reaper
COPY requirements.lock /src/requirements.lock
RUN /opt/reaper/bin/pip install --require-hashes --no-deps -r /src/requirements.lock
COPY pyproject.toml README.md /src/
COPY reaper /src/reaper
RUN /opt/reaper/bin/pip install --no-deps /src \
    && /opt/reaper/bin/python -m compileall -q /opt/reaper

# -- runtime ------------------------------------------------------------------------------------
FROM python:3.11-slim
LABEL org.opencontainers.image.title="reaper" \
      org.opencontainers.image.description="Policy-driven batch job reaper (AWS Batch, Tapis, Sutro)"
# Bytecode was compiled at build time; a read-only root file system could not take more.
ENV PATH=/opt/reaper/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REAPER_CONFIG=/etc/reaper/reaper.yaml
COPY --from=build /opt/reaper /opt/reaper
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can check it without /etc/passwd.
RUN groupadd --system --gid 10001 reaper \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/reaper --no-create-home \
       --shell /usr/sbin/nologin reaper \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/reaper \
    && install -d -m 0755 /etc/reaper
VOLUME ["/var/lib/reaper"]
WORKDIR /var/lib/reaper
USER 10001:10001
# Daemon mode serves /metrics here when reaper.yaml sets metrics.listen: 0.0.0.0:9464.
EXPOSE 9464
ENTRYPOINT ["reaper"]
CMD ["daemon", "--config", "/etc/reaper/reaper.yaml"]
