# Multi-stage build of a static (musl) detour binary on an empty base image.
#   docker build -t detour:0.1.0 .
FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
COPY bench ./bench
RUN cargo build --release --locked --bin detour \
 && strip target/release/detour

FROM scratch
COPY --from=build /src/target/release/detour /detour
# Non-root, matching the Deployment's runAsUser; no shell, no package manager.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/detour"]
CMD ["serve"]
