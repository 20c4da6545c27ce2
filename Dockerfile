# Turnout: a multi-stage build. The first stage compiles the release binary;
# the second is a minimal runtime (glibc + CA certificates, no shell, no
# package manager) that runs it as an unprivileged user.
#
#   docker build -t turnout .
#   docker run -p 8080:8080 -p 9090:9090 -v "$PWD/my-config.yaml:/etc/turnout/config.yaml:ro" \
#     -e TURNOUT_ADMIN_TOKEN=... -e OPENAI_API_KEY=... turnout
#
# The config is read from /etc/turnout/config.yaml (mount your own; the one
# baked in is the repository's demo config, which binds loopback only).
# SIGTERM drains gracefully (shutdown.grace, then shutdown.drain); SIGHUP
# reloads the config.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
# hyper with Turnout's memory patch ([patch.crates-io], vendor/hyper/PATCHES.md).
COPY vendor ./vendor
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin turnout \
 && mkdir -p /out/var/lib/turnout \
 && cp target/release/turnout /out/turnout

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/turnout /usr/local/bin/turnout
COPY config.yaml /etc/turnout/config.yaml
COPY --from=build --chown=65532:65532 /out/var/lib/turnout /var/lib/turnout
WORKDIR /var/lib/turnout
USER 65532:65532
ENV TURNOUT_CONFIG=/etc/turnout/config.yaml
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/turnout"]
CMD ["serve"]
