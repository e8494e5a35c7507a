# bpfnetd as a container image: docker build -t bpfnet .
# How to run it (host network and pid namespaces, capabilities, mounts):
# README.md, "Running in a container".
#
# The BPF objects are committed (bpf/*_bpfel.o), so the build needs Go only.
# With a vendor/ directory in the context (`go mod vendor`), the build needs
# no network; the runtime stage installs iptables and iproute2 only when
# the base image lacks them.
ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${GO_IMAGE} AS build
WORKDIR /src
COPY . .
ARG VERSION=dev
ARG COMMIT=
ARG DATE=
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w \
      -X github.com/bpfnet/bpfnet/internal/version.Version=${VERSION} \
      -X github.com/bpfnet/bpfnet/internal/version.Commit=${COMMIT} \
      -X github.com/bpfnet/bpfnet/internal/version.Date=${DATE}" \
    -o /out/ ./cmd/bpfnetd ./cmd/bpfnet

FROM ${BASE_IMAGE}
ARG VERSION=dev
LABEL org.opencontainers.image.title="bpfnet" \
      org.opencontainers.image.description="Docker-style bridge networks for container hosts, enforced by eBPF (iptables fallback)" \
      org.opencontainers.image.source="https://github.com/bpfnet/bpfnet" \
      org.opencontainers.image.documentation="https://github.com/bpfnet/bpfnet/blob/main/README.md" \
      org.opencontainers.image.version="${VERSION}"
# iptables brings both backends (iptables-nft and iptables-legacy).
RUN if ! command -v iptables >/dev/null || ! command -v ip >/dev/null; then \
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables iproute2 \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=build /out/bpfnetd /out/bpfnet /usr/local/bin/
COPY deploy/bpfnetd.yaml /etc/bpfnet/bpfnetd.yaml
ENTRYPOINT ["/usr/local/bin/bpfnetd"]
