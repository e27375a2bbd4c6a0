# syntax=docker/dockerfile:1
# logferry's container image, laid out like Fluent Bit's and AWS for Fluent Bit's so that their
# manifests, charts and task definitions work with only the image changed (docs/deploy.md).
#
#   docker build -t logferry:dev .
#   docker run --rm logferry:dev                                  # dummy -> stdout, API on :2020
#   docker run --rm -v $PWD/my.conf:/fluent-bit/etc/fluent-bit.conf:ro logferry:dev
#
# Build stage: a release build of the binary, then scripts/image-layout puts every file where
# the final stage copies it from (the same script the tests run).
ARG RUST_VERSION=1.94
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
# make: the lua filter's LuaJIT is built from source (the slim image has gcc, not make).
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The systemd input links libsystemd (sd_journal).
RUN apt-get update && apt-get install -y --no-install-recommends libsystemd-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
COPY . .
# The final image has glibc and libgcc only: libsystemd and the libraries it loads (liblzma,
# libzstd, liblz4, libgcrypt, libcap, ...) are copied from this stage, same Debian release.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p logferry \
    && install -m 0755 target/release/logferry /logferry \
    && bash scripts/image-layout /logferry /rootfs \
    && for lib in $(ldd /logferry | awk '$3 ~ /^\// && $1 !~ /^(libc|libm|libgcc_s|ld-linux)[.-]/ {print $3}'); do \
         install -D -m 0644 "$(readlink -f "$lib")" "/rootfs$(dirname "$(readlink -f "$lib")")/$(basename "$lib")"; \
       done

# Final stage: distroless with glibc (the binary links glibc and libgcc), no shell, no package
# manager. The default user is non-root (65532); a DaemonSet that reads root-owned node logs
# sets runAsUser: 0 (deploy/kubernetes/ does, with every capability dropped). Nothing in the
# image is written at run time: storage.path and the tail DB go to mounted volumes, and the AWS
# init steps' S3 downloads go to $TMPDIR (mount an emptyDir at /tmp), so a read-only root
# filesystem works.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /rootfs/ /
ENV FLUENT_BIT_CONFIG_FILE=/fluent-bit/etc/fluent-bit.conf
USER 65532:65532
EXPOSE 2020
# As Fluent Bit's image: the program as entrypoint, so `docker run IMAGE -i dummy -o stdout`
# works; the config comes from FLUENT_BIT_CONFIG_FILE when no -c is given. AWS for Fluent Bit
# task definitions that set the command to its `-e /fluent-bit/*.so -c ...` line work too.
ENTRYPOINT ["/fluent-bit/bin/fluent-bit"]
CMD []
