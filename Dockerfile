# syntax=docker/dockerfile:1
#
# tee-ingress: one static binary (plus verifycli) in a minimal image.
#
# Reproducible: the same source gives the same binary bytes (CGO off,
# -trimpath, no VCS stamp, empty build ID); internal/repocheck tests that with
# the flags below. Base images are pinned by digest: refresh them deliberately
# with `docker buildx imagetools inspect <image:tag>` and review the change.
FROM golang:1.25-bookworm@sha256:3b4a11519ad929d1e1d261a12cff056f0c85b735253d7d861346b9c6f8b36437 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ENV CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false"
# -tags nodev leaves --dev and its stand-ins (pebble, emulators, the
# guest-agent simulator) out of the image: code the TEE has no use for.
RUN go build -tags nodev -ldflags="-s -w -buildid=" -o /out/ingress ./cmd/ingress \
 && go build -ldflags="-s -w -buildid=" -o /out/verifycli ./verifycli

# distroless/static: CA certificates, tzdata, nothing else: no shell, no
# package manager, nothing fetched at run time.
FROM gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639
COPY --from=build /out/ingress /usr/local/bin/ingress
COPY --from=build /out/verifycli /usr/local/bin/verifycli
# Root, as dstack-ingress ran: the guest agent's socket (/var/run/dstack.sock)
# and the cert-data volume that dstack-ingress users already have are
# root-owned.
USER 0:0
EXPOSE 443
ENTRYPOINT ["/usr/local/bin/ingress"]
