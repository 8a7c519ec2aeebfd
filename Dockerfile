# patchbay: multi-stage build. The builder compiles the release binary; the runtime image holds
# only the binary, the default rules, templates and demo data, and runs as an unprivileged user.
#
#   docker build -t patchbay .
#   docker run --network host -v $PWD/settings.json:/etc/patchbay/settings.json:ro \
#       -v patchbay-media:/var/lib/patchbay patchbay
#
# Speech-to-text (feature `stt`) needs libvosk; see the README before enabling it here.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin patchbay \
    && strip target/release/patchbay

FROM debian:bookworm-slim
# git: the phone repo is fetched with the git command; ca-certificates: SMTP/CalDAV over TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/patchbay --create-home patchbay
COPY --from=builder /src/target/release/patchbay /usr/local/bin/patchbay
COPY --from=builder /src/rules /usr/share/patchbay/rules
COPY --from=builder /src/templates /usr/share/patchbay/templates
COPY --from=builder /src/data /usr/share/patchbay/data
# Settings (secrets) come in read-only; recordings, greetings, the journal and the phone repo
# live on a volume shared with FreeSWITCH (same paths on both sides).
VOLUME ["/var/lib/patchbay"]
# mod_xml_curl endpoint, outbound ESL socket.
EXPOSE 8080 8084
USER patchbay
WORKDIR /var/lib/patchbay
# `docker stop` sends SIGTERM: patchbay finishes requests in flight and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["patchbay"]
CMD ["run", "--settings", "/etc/patchbay/settings.json", "--repo", "/var/lib/patchbay/phone"]
