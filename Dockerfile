# Multi-stage: build static-enough Rust binaries, run them on distroless as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update -qq && apt-get install -y -qq protobuf-compiler && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
COPY benches benches
COPY tests tests
RUN cargo build --release --locked --bins

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/wva-metrics-server /usr/local/bin/wva-metrics-server
COPY --from=build /src/target/release/vllm-emulator /usr/local/bin/vllm-emulator
USER 65532:65532
EXPOSE 6443
ENTRYPOINT ["/usr/local/bin/wva-metrics-server"]
CMD ["serve"]
