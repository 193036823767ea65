# Multi-stage: build the server (the image carries it alone; vllm-emulator is a test tool), run it on
# distroless as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update -qq && apt-get install -y -qq protobuf-compiler && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY benches benches
COPY tests tests
RUN cargo build --release --locked --bin wva-metrics-server

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/wva-metrics-server /usr/local/bin/wva-metrics-server
USER 65532:65532
EXPOSE 6443 9443
ENTRYPOINT ["/usr/local/bin/wva-metrics-server"]
CMD ["serve"]
