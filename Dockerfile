# weightcast image: build stage installs through scripts/setup (the one package list) and builds;
# the runtime stage carries only runtime libraries and the binaries, as a non-root user.
FROM debian:12 AS build
WORKDIR /src
COPY . .
RUN scripts/setup && \
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release && \
    cmake --build build --target weightcast-pack weightcast weightcastd

FROM debian:12-slim
RUN apt-get update -qq && \
    apt-get install -y -qq --no-install-recommends \
      libx265-199 libde265-0 libzstd1 libprotobuf32 libabsl20220623 libssl3 libgrpc++1.51 \
      libcivetweb1 libsqlite3-0 libtorch1.13 libopenblas0-serial && \
    rm -rf /var/lib/apt/lists/* && \
    useradd --system --create-home --home-dir /data weightcast
COPY --from=build /src/build/client/pack/weightcast-pack /src/build/client/weightcast /src/build/server/weightcastd /usr/local/bin/
USER weightcast
WORKDIR /data
VOLUME /data
EXPOSE 50051 9464
ENTRYPOINT ["weightcastd", "--listen", "0.0.0.0:50051", "--metrics", "0.0.0.0:9464", "--data-dir", "/data"]

