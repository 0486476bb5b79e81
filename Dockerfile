# A static herald binary in a minimal image.
#   docker build -t herald .
#   docker compose up        (a 3-node cluster; see docker-compose.yml)
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/herald ./cmd/herald

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/herald /usr/local/bin/herald
# Client port (websockets, HTTP, admin API) and peer port.
EXPOSE 7070 7170
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["serve", "--data-dir", "/data"]
