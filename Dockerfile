# Waypost image: `docker build -t waypost .`
# BASE_IMAGE must provide python3 (>= 3.11) with venv. Wheels placed in ./wheelhouse are used
# first (offline builds: `pip wheel . -w wheelhouse` on the host, then --build-arg PIP_NO_INDEX=1).
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ARG PIP_NO_INDEX=
ENV PIP_NO_INDEX=${PIP_NO_INDEX} PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY . /src
RUN mkdir -p /src/wheelhouse \
 && python3 -m venv /opt/waypost \
 && /opt/waypost/bin/pip install --find-links /src/wheelhouse /src \
 && find /opt/waypost -name '__pycache__' -prune -exec rm -rf {} + \
 && rm -rf /opt/waypost/lib/python3*/site-packages/pip /opt/waypost/lib/python3*/site-packages/setuptools

FROM ${BASE_IMAGE}
COPY --from=build /opt/waypost /opt/waypost
ENV PATH=/opt/waypost/bin:$PATH PYTHONUNBUFFERED=1
# Probes what the running command serves: `up` /healthz, `catalog` its API, `ambassador --admin`
# /healthz; registrator and dns serve no HTTP and pass while running (waypost/healthcheck.py).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python3", "-m", "waypost.healthcheck"]
ENTRYPOINT ["waypost"]
CMD ["up"]
