# Consilium SFU image.
#
#   docker build -t consilium .
#   docker run --network host -e CONSILIUM_SECRET=... -e CONSILIUM_API_KEY=... consilium
#
# Media is UDP (ICE/DTLS/SRTP) on ports chosen at run time, which a bridge network's -p cannot
# map, so run with --network host, or publish the UDP range your deployment pins and pass the
# address clients should use with --ice-host / CONSILIUM_ICE_HOSTS.

# Build stage: only the wheel leaves it, so sources and build tools stay out of the image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sfu ./sfu
COPY signaling ./signaling
COPY media ./media
COPY jitter ./jitter
COPY tools ./tools
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Dependencies (aiortc, av, opencv-headless, numpy) come as manylinux wheels with their native
# libraries bundled, so no apt packages are needed.
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin consilium \
    && mkdir -p /var/lib/consilium && chown 10001 /var/lib/consilium

# The database (chat, files, audit), shared studies and recordings live under ./data and
# ./recordings of the working directory: keep it on a volume so they outlive the container.
WORKDIR /var/lib/consilium
VOLUME ["/var/lib/consilium"]
USER 10001
EXPOSE 8080/tcp

# Plain HTTP: with --tls-cert the server speaks HTTPS and this check needs changing.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CONSILIUM_PORT', '8080'), timeout=4)"]

CMD ["consilium", "serve", "--host", "0.0.0.0"]
