# Rendered by dlbench from images/tensorflow.Dockerfile.j2: do not edit, edit the template.
# TensorFlow 2.21.0 | toolchain cuda12.5-cudnn9.3 | Python 3.11 | base debian-bookworm (Debian 12 (bookworm))
FROM dlbench/base:debian-bookworm

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv python3-pip \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && groupadd --gid 1000 bench \
 && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin bench


# Index settings arrive as build arguments at build time only.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
RUN pip install 'tensorflow[and-cuda]==2.21.0' numpy

RUN pip show tensorflow

WORKDIR /opt/dlbench
COPY bench/ /opt/dlbench/bench/
USER 1000:1000
ENTRYPOINT ["python", "-m", "bench"]
CMD ["--list"]

LABEL org.opencontainers.image.title="dlbench tensorflow 2.21.0 (cuda12.5-cudnn9.3)" \
      org.opencontainers.image.description="dlbench benchmark image: TensorFlow 2.21.0, cuda12.5-cudnn9.3, Python 3.11" \
      org.opencontainers.image.version="2.21.0" \
      org.opencontainers.image.source="https://github.com/dlbench/dlbench" \
      org.opencontainers.image.base.name="dlbench/base:debian-bookworm" \
      dlbench.framework="tensorflow" \
      dlbench.framework.version="2.21.0" \
      dlbench.toolchain="cuda12.5-cudnn9.3" \
      dlbench.device="gpu" \
      dlbench.cuda="12.5" \
      dlbench.cudnn="9.3" \
      dlbench.python="3.11" \
      dlbench.base="debian-bookworm" \
      dlbench.os="Debian 12 (bookworm)" \
      dlbench.pip="tensorflow[and-cuda]==2.21.0 numpy"
