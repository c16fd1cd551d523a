# The Felix broker image (docs/deploy.md):
#   docker build -t felix:0.1.0 .
#   docker run --rm -p 7447:7447/udp -p 8080:8080 -e FELIX_AUTH_TOKENS='s3cret=default:*' felix:0.1.0
# Two stages: the wheel is built and installed into a virtual environment in the first;
# the final image gets only that environment, on the same slim base, and runs as an
# unprivileged user. No compiler, no build frontend, no source tree in the final image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m pip install "build>=1.2"
COPY pyproject.toml README.md ./
COPY felix_proto ./felix_proto
COPY felix_core ./felix_core
COPY felix_server ./felix_server
COPY felix_runtime ./felix_runtime
COPY felix_runtime_asyncio ./felix_runtime_asyncio
COPY felix_runtime_anyio ./felix_runtime_anyio
COPY felix_client ./felix_client
COPY conformance ./conformance
RUN python -m build --wheel --outdir /dist . \
 && python -m venv --without-pip /opt/felix \
 && python -m pip --python /opt/felix/bin/python install /dist/*.whl \
 && /opt/felix/bin/python -m compileall -q /opt/felix

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 felix \
 && useradd --system --uid 10001 --gid felix --home-dir /var/lib/felix --no-create-home \
      --shell /usr/sbin/nologin felix \
 && mkdir -p /var/lib/felix \
 && chown felix:felix /var/lib/felix
COPY --from=build /opt/felix /opt/felix
ENV PATH=/opt/felix/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/felix
VOLUME ["/var/lib/felix"]
# QUIC (UDP) for clients; HTTP for /metrics, /live and /ready.
EXPOSE 7447/udp 8080/tcp
STOPSIGNAL SIGTERM
ENTRYPOINT ["felix-broker"]
CMD ["--listen", "0.0.0.0:7447", "--metrics", "0.0.0.0:8080", "--data-dir", "/var/lib/felix", "--log-format", "json"]
