# syntax=docker/dockerfile:1
# The asenet operator image. Not built in this repository's CI: its machines have no
# container engine. Build with BuildKit: docker build -t asenet:dev .
#
# Stage 1 builds a release binary (cache mounts keep the registry and target directory
# between builds); stage 2 is distroless (glibc and CA certificates, no shell, no package
# manager) running as the non-root user 65532, which the Helm chart's securityContext
# (runAsNonRoot, readOnlyRootFilesystem, capabilities drop ALL) expects.

FROM rust:1.89-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin asenet \
 && cp target/release/asenet /asenet \
 && strip /asenet

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /asenet /usr/local/bin/asenet
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/asenet"]
CMD ["controller"]
