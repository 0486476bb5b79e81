# A static herald binary in a minimal image.
#   docker build -t herald .
#   docker compose up        (a 3-node cluster; see docker-compose.yml)
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/herald ./cmd/herald
# The data folder, made here because the final image has no shell.
RUN mkdir -m 0750 /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/herald /usr/local/bin/herald
# /data belongs to the nonroot user (65532) before it becomes a volume: a
# new named volume takes the owner of the image's folder, so without this
# the node, which does not run as root, could not write its data.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# Client port (websockets, HTTP, admin API) and peer port.
EXPOSE 7070 7170
VOLUME ["/data"]
ENTRYPOINT ["/usr/local/bin/herald"]
CMD ["serve", "--data-dir", "/data"]
