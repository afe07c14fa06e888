# Build: docker build -t konstruct .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/konstruct ./cmd/konstruct

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/konstruct /usr/local/bin/konstruct
USER nonroot:nonroot
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/konstruct"]
CMD ["run"]
