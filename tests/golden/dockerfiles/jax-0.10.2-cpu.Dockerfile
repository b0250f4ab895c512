# Rendered by dlbench from images/jax.Dockerfile.j2: do not edit, edit the template.
# JAX 0.10.2 | toolchain cpu | Python 3.11 | base debian-bookworm (Debian 12 (bookworm))
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
RUN pip install jax==0.10.2 flax==0.12.8 optax jmp==0.0.4 numpy

RUN python -c "import jax, numpy; print(jax.__name__, jax.__version__)"

WORKDIR /opt/dlbench
COPY bench/ /opt/dlbench/bench/
USER 1000:1000
ENTRYPOINT ["python", "-m", "bench"]
CMD ["--list"]

LABEL org.opencontainers.image.title="dlbench jax 0.10.2 (cpu)" \
      org.opencontainers.image.description="dlbench benchmark image: JAX 0.10.2, cpu, Python 3.11" \
      org.opencontainers.image.version="0.10.2" \
      org.opencontainers.image.source="https://github.com/dlbench/dlbench" \
      org.opencontainers.image.base.name="dlbench/base:debian-bookworm" \
      dlbench.framework="jax" \
      dlbench.framework.version="0.10.2" \
      dlbench.toolchain="cpu" \
      dlbench.device="cpu" \
      dlbench.cuda="none" \
      dlbench.cudnn="none" \
      dlbench.python="3.11" \
      dlbench.base="debian-bookworm" \
      dlbench.os="Debian 12 (bookworm)" \
      dlbench.pip="jax==0.10.2 flax==0.12.8 optax jmp==0.0.4 numpy"
