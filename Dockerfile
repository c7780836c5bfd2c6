# weightcast image. The build stage runs exactly what CI runs (scripts/setup, the one package
# list, then scripts/build); tests/deploy_check.py fails if this stage runs anything else. The
# runtime stage carries only runtime libraries and the binaries, as a non-root user.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN scripts/setup && scripts/build weightcastd weightcast weightcast-pack

FROM debian:12-slim
RUN apt-get update -qq && \
    apt-get install -y -qq --no-install-recommends \
      libx265-199 libde265-0 libzstd1 libprotobuf32 libabsl20220623 libssl3 libgrpc++1.51 \
      libcivetweb1 libsqlite3-0 libpqxx-6.4 libtorch1.13 libopenblas0-serial && \
    rm -rf /var/lib/apt/lists/* && \
    useradd --system --create-home --home-dir /data weightcast
COPY --from=build /src/build/client/pack/weightcast-pack /src/build/client/weightcast /src/build/server/weightcastd /usr/local/bin/
USER weightcast
WORKDIR /data
VOLUME /data
# gRPC (h2c, or TLS with --tls-cert/--tls-key) and Prometheus /metrics.
EXPOSE 50051 9464
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["weightcast", "--server", "127.0.0.1:50051", "health"]
ENTRYPOINT ["weightcastd", "--listen", "0.0.0.0:50051", "--metrics", "0.0.0.0:9464", "--data-dir", "/data"]
