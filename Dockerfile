# Builds the clinician console (Node), the plugins (wasm32-wasip2) and the host,
# which embeds the console, then ships the host and plugins in a slim image.
FROM node:20-bookworm-slim AS console
WORKDIR /console
COPY console/package.json console/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY console/ ./
RUN npm run build

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip2
COPY . .
COPY --from=console /console/dist /console-dist
ENV PROJECTOR_CONSOLE_DIST=/console-dist
RUN scripts/build-plugins && cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/projector projector
COPY --from=build /src/target/release/projector /usr/local/bin/projector
COPY --from=build --chown=projector /src/plugins-dist /var/lib/projector/plugins
USER projector
EXPOSE 3020 3021
ENTRYPOINT ["projector"]
CMD ["serve"]
