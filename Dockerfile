# syntax=docker/dockerfile:1
# One small image with both binaries, statically linked (musl):
#   /usr/local/bin/etcd-coordinator  the operator (`kubernetes`), and the member Pods' init
#                                    container (`install-sidecar`)
#   /usr/local/bin/etcd-sidecar      copied into every member Pod; runs etcd as its child
#                                    inside the official (distroless) etcd image (the small
#                                    binary, without the coordinator's dependencies)
#
#   docker build -t etcd-operator:dev .
#   kind load docker-image etcd-operator:dev     # on kind
FROM rust:1-alpine AS build
# musl-dev, gcc and make for the C parts (ring; jemalloc, the coordinator's allocator). protoc installed explicitly: Alpine's `protoc`
# package (Debian's protobuf-compiler), because the vendored protoc the root build script
# falls back to is a glibc binary that cannot run here, and etcd-client's build script
# looks for one on PATH; protobuf-dev for the well-known .proto includes. The build stops
# here, not halfway through cargo, when protoc is missing.
RUN apk add --no-cache musl-dev gcc make protoc protobuf-dev \
    && protoc --version
ENV PROTOC=/usr/bin/protoc
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin etcd-coordinator --bin etcd-sidecar \
    && mkdir -p /out \
    && cp target/release/etcd-coordinator target/release/etcd-sidecar /out/

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/etcd-coordinator /out/etcd-sidecar /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/etcd-coordinator"]
CMD ["kubernetes"]
