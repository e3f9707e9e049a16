# drum2midi as a web service: `drum2midi serve` on port 8080, results in /data.
#
#   docker build -t drum2midi .                      # CPU image
#   docker build -f Dockerfile.cuda -t drum2midi:cuda .   # CUDA image (see docs/deploy.md)
#   docker run --rm -p 127.0.0.1:8080:8080 -v drum2midi-data:/data drum2midi
#
# The build stage runs scripts/setup, the README's first command, which is what
# CI exercises (install-deps, fetch-model, cmake build, a run on the demo song).
# Build arg WITH_MODEL=0 leaves Meta's HTDemucs weights out (HPSS only); they
# are for research and personal use: do not publish an image that holds them.

FROM debian:12 AS build
ARG WITH_MODEL=1
ENV DEBIAN_FRONTEND=noninteractive DRUM2MIDI_MODEL_DIR=/opt/drum2midi/models
WORKDIR /src
COPY . .
RUN if [ "$WITH_MODEL" = 1 ]; then bash scripts/setup; \
    else bash scripts/install-deps \
      && cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      && cmake --build build -j"$(nproc)"; fi \
 && mkdir -p /opt/drum2midi/models \
 && build/drum2midi serve --help >/dev/null

FROM debian:12-slim AS runtime
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libsndfile1 libmpg123-0 libsoxr0 libfftw3-single3 libpng16-16 libcjson1 libfreetype6 \
      fonts-dejavu-core libmicrohttpd12 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin drum2midi \
 && mkdir -p /data && chown drum2midi:drum2midi /data
COPY --from=build /src/build/drum2midi /usr/local/bin/drum2midi
COPY --from=build /opt/drum2midi/models /opt/drum2midi/models
ENV DRUM2MIDI_MODEL_DIR=/opt/drum2midi/models
USER drum2midi
VOLUME /data
EXPOSE 8080
# bash's /dev/tcp: no HTTP client needed in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /api/health HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q '\"status\":\"ok\"' <&3"]
# 0.0.0.0 inside the container only; publish the port on the host's loopback
# (or behind a reverse proxy), see docs/deploy.md.
ENTRYPOINT ["/usr/local/bin/drum2midi", "serve", "--host", "0.0.0.0", "--port", "8080", "--data", "/data"]
CMD []
