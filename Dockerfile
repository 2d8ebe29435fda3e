# syntax=docker/dockerfile:1
#
# The dfs image: storage node, proxy, the `dfs` command and dfs-mount, as the Helm chart
# (charts/dfs) runs them. Two stages: the first compiles TypeScript and fuse-native's
# patched addon (which needs a compiler), the second carries only what runs.
#
#   docker build -t ghcr.io/dfs/dfs:0.1.0 .

FROM node:20-bookworm-slim AS build
# What scripts/build-fuse-native.js needs to patch and compile fuse-native's addon.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ patch \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
COPY patches ./patches
COPY scripts/build-fuse-native.js ./scripts/
RUN npm ci
COPY tsconfig.json ./
COPY common ./common
COPY storage ./storage
COPY proxy ./proxy
COPY mount ./mount
COPY cli ./cli
COPY test ./test
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts

FROM node:20-bookworm-slim
# libfuse2 and fusermount for dfs-mount; openssl for certificates (cli/certs.ts and the
# chart's issue-cert.sh); tini for `docker run` (the chart's pods name their own command:
# node handles SIGTERM itself, as PID 1 too).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libfuse2 fuse openssl ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 dfs \
 && useradd --uid 10001 --gid dfs --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin dfs
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY dashboards ./dashboards
RUN ln -s /app/bin/dfs /usr/local/bin/dfs \
 && ln -s /app/bin/dfs-mount /usr/local/bin/dfs-mount
ENV NODE_ENV=production
USER 10001:10001
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["dfs", "--help"]
