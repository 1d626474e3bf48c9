# One image for every fleet service (compose.yaml picks the command: fleet ingest|api|sim|db).
# The map library is fetched from the npm registry at build time, like `make web-assets`,
# and served by the API from the image: nothing is loaded from a CDN at run time.

ARG LEAFLET_VERSION=1.9.4

FROM node:20-bookworm-slim AS web-assets
ARG LEAFLET_VERSION
WORKDIR /assets
RUN npm pack "leaflet@${LEAFLET_VERSION}" --silent \
 && tar -xzf "leaflet-${LEAFLET_VERSION}.tgz" \
 && mkdir -p vendor \
 && cp package/dist/leaflet.js package/dist/leaflet.css vendor/ \
 && cp -r package/dist/images vendor/images \
 && echo "${LEAFLET_VERSION}" > vendor/.leaflet-version

FROM python:3.12-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fleet ./fleet
COPY mqtt5 ./mqtt5
COPY broker ./broker
COPY ingest ./ingest
COPY analytics ./analytics
COPY api ./api
COPY tracker_sim ./tracker_sim
COPY firmware_stub ./firmware_stub
# the developer tools (fleet demo, fleet bench ...): their commands are declared with the rest
COPY devtools ./devtools
COPY --from=web-assets /assets/vendor ./api/static/vendor
RUN pip install . \
 && useradd --system --no-create-home --shell /usr/sbin/nologin fleet
USER fleet
# Production never uses the embedded PostgreSQL: FLEET_DSN is required by compose.yaml.
ENV FLEET_DATA_DIR=/tmp/fleet-data
ENTRYPOINT []
CMD ["fleet", "--help"]
