# Rendered by dlbench from images/cntk.Dockerfile.j2: do not edit, edit the template.
# CNTK 2.7.post2 | toolchain cuda10.0-cudnn7 | Python 3.6 | base ubuntu18.04 (Ubuntu 18.04)
FROM ubuntu:18.04

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

RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libjpeg-turbo8 libpng16-16 openssh-client build-essential wget \
 && wget -q https://download.open-mpi.org/release/open-mpi/v1.10/openmpi-1.10.7.tar.gz -O /tmp/openmpi.tar.gz \
 && mkdir /tmp/openmpi && tar -xzf /tmp/openmpi.tar.gz -C /tmp/openmpi --strip-components=1 \
 && cd /tmp/openmpi && ./configure --prefix=/usr/local/mpi --disable-dlopen >/dev/null && make -j"$(nproc)" install >/dev/null \
 && cd / && rm -rf /tmp/openmpi /tmp/openmpi.tar.gz \
 && apt-get purge -y build-essential wget && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/local/mpi/bin:$PATH \
    LD_LIBRARY_PATH=/usr/local/mpi/lib

# Index settings arrive as build arguments at build time only.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
RUN pip install "pip<22" \
 && pip install cntk-gpu==2.7.post2 'numpy<1.20'

RUN pip show cntk-gpu

WORKDIR /opt/dlbench
COPY bench/ /opt/dlbench/bench/
USER 1000:1000
ENTRYPOINT ["python", "-m", "bench"]
CMD ["--list"]

LABEL org.opencontainers.image.title="dlbench cntk 2.7.post2 (cuda10.0-cudnn7)" \
      org.opencontainers.image.description="dlbench benchmark image: CNTK 2.7.post2, cuda10.0-cudnn7, Python 3.6" \
      org.opencontainers.image.version="2.7.post2" \
      org.opencontainers.image.source="https://github.com/dlbench/dlbench" \
      org.opencontainers.image.base.name="ubuntu:18.04" \
      dlbench.framework="cntk" \
      dlbench.framework.version="2.7.post2" \
      dlbench.toolchain="cuda10.0-cudnn7" \
      dlbench.device="gpu" \
      dlbench.cuda="10.0" \
      dlbench.cudnn="7" \
      dlbench.python="3.6" \
      dlbench.base="ubuntu18.04" \
      dlbench.os="Ubuntu 18.04" \
      dlbench.pip="cntk-gpu==2.7.post2 numpy<1.20" \
      dlbench.apt="libgomp1 libjpeg-turbo8 libpng16-16 openssh-client" \
      dlbench.openmpi="1.10.7"
