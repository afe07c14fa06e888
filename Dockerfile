# Build: docker build -t konstruct .   (.dockerignore keeps bin/, dist/ and .git out)
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/konstruct ./cmd/konstruct
# The state directory (state_dir: the disk spool), owned by the image's
# nonroot user, so that a volume mounted there starts writable.
RUN mkdir -p /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/konstruct /usr/local/bin/konstruct
COPY --from=build --chown=65532:65532 /out/state /var/lib/konstruct
USER nonroot:nonroot
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/konstruct"]
CMD ["run"]
