# Berth node agent image. Build with tools/build-image.sh, or by hand:
#   DOCKER_BUILDKIT=1 docker build --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt \
#     --build-arg BASE_IMAGE=berth/debian-base:bookworm -t berth/agent:0.1.0 .
# The CA secret lets pip trust an intercepting proxy; it is mounted for one step and never stored.
# (No "# syntax=" line: the built-in BuildKit frontend supports --mount and needs no download.)
ARG BASE_IMAGE=berth/debian-base:bookworm

# -- builder: a wheel of Berth, installed with its dependencies into /opt/berth ------------------
# The node agent and nothing else: Berth's core (the Docker runtime) plus the extras in
# BERTH_EXTRAS. The default image also serves the platform's Kubernetes manifest, so it carries the
# kubernetes extra; BERTH_EXTRAS="" builds a Docker-only image. Never the platform extra.
# Left out of the final venv: pip/setuptools/wheel and caches.
FROM ${BASE_IMAGE} AS builder
ARG BERTH_EXTRAS=kubernetes
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/berth
WORKDIR /build
COPY constraints.txt ./
# Dependencies first: this layer is reused while only Berth's own code changes.
COPY pyproject.toml README.md ./
RUN python3 -c 'import sys, tomllib; project = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
      extras = [project["optional-dependencies"][name] for name in sys.argv[1:]]; \
      print("\n".join(project["dependencies"] + sum(extras, [])))' $(echo "$BERTH_EXTRAS" | tr , ' ') \
      > requirements.txt
RUN --mount=type=secret,id=ca,target=/etc/ssl/certs/ca-certificates.crt \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    /opt/berth/bin/pip install --quiet -c constraints.txt -r requirements.txt "setuptools>=68" wheel
COPY src ./src
RUN /opt/berth/bin/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /build/dist . \
 && /opt/berth/bin/pip install --quiet --no-deps --no-index /build/dist/berth-*.whl \
 && /opt/berth/bin/pip uninstall --quiet --yes setuptools wheel pip \
 && find /opt/berth -name '__pycache__' -prune -exec rm -rf {} + \
 && /opt/berth/bin/python -m compileall -q -j 0 -x '/kubernetes/' /opt/berth/lib \
 && /opt/berth/bin/berth version

# -- runtime: the base plus the virtual environment, nothing else --------------------------------
FROM ${BASE_IMAGE}
COPY --from=builder /opt/berth /opt/berth
# No BERTH_RUNTIME here: Docker is the default, and the platform's Kubernetes manifest selects
# the Kubernetes runtime with CRANE_IN_CLUSTER=true alone.
ENV PATH=/opt/berth/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INTERNAL_MOUNT_PATH=/srv/dagent
RUN mkdir -p /srv/dagent && chmod 0700 /srv/dagent
VOLUME /srv/dagent
WORKDIR /srv/dagent
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["berth", "health"]
ENTRYPOINT ["berth"]
CMD ["agent"]

ARG VERSION=0.0.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="berth-agent" \
      org.opencontainers.image.description="Berth node agent (dyrector.io-compatible)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/berth/berth" \
      org.dyrectorio.agent="berth"
