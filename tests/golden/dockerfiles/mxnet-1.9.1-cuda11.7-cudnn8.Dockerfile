# Rendered by dlbench from images/mxnet.Dockerfile.j2: do not edit, edit the template.
# MXNet 1.9.1 | toolchain cuda11.7-cudnn8 | Python 3.11 | base debian-bookworm (Debian 12 (bookworm))
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

RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libquadmath0 libgfortran5 \
 && rm -rf /var/lib/apt/lists/*

# Index settings arrive as build arguments at build time only.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_TRUSTED_HOST
RUN printf '%s\n' 'numpy<1.24' > /opt/venv/constraints.txt \
 && pip install -c /opt/venv/constraints.txt mxnet-cu117==1.9.1 nvidia-cuda-runtime-cu11==11.7.99 nvidia-cudnn-cu11==8.5.0.96 nvidia-cublas-cu11==11.10.3.66 nvidia-cufft-cu11==10.9.0.58 nvidia-curand-cu11==10.2.10.91 nvidia-cusolver-cu11==11.4.0.1 nvidia-cusparse-cu11==11.7.4.91 nvidia-cuda-nvrtc-cu11==11.7.99 numpy
ENV LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cuda_runtime/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cufft/lib:/opt/venv/lib/python3.11/site-packages/nvidia/curand/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cusolver/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cusparse/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cuda_nvrtc/lib

RUN pip show mxnet-cu117

WORKDIR /opt/dlbench
COPY bench/ /opt/dlbench/bench/
USER 1000:1000
ENTRYPOINT ["python", "-m", "bench"]
CMD ["--list"]

LABEL org.opencontainers.image.title="dlbench mxnet 1.9.1 (cuda11.7-cudnn8)" \
      org.opencontainers.image.description="dlbench benchmark image: MXNet 1.9.1, cuda11.7-cudnn8, Python 3.11" \
      org.opencontainers.image.version="1.9.1" \
      org.opencontainers.image.source="https://github.com/dlbench/dlbench" \
      org.opencontainers.image.base.name="dlbench/base:debian-bookworm" \
      dlbench.framework="mxnet" \
      dlbench.framework.version="1.9.1" \
      dlbench.toolchain="cuda11.7-cudnn8" \
      dlbench.device="gpu" \
      dlbench.cuda="11.7" \
      dlbench.cudnn="8" \
      dlbench.python="3.11" \
      dlbench.base="debian-bookworm" \
      dlbench.os="Debian 12 (bookworm)" \
      dlbench.pip="mxnet-cu117==1.9.1 nvidia-cuda-runtime-cu11==11.7.99 nvidia-cudnn-cu11==8.5.0.96 nvidia-cublas-cu11==11.10.3.66 nvidia-cufft-cu11==10.9.0.58 nvidia-curand-cu11==10.2.10.91 nvidia-cusolver-cu11==11.4.0.1 nvidia-cusparse-cu11==11.7.4.91 nvidia-cuda-nvrtc-cu11==11.7.99 numpy" \
      dlbench.pip.constraints="numpy<1.24" \
      dlbench.apt="libgomp1 libquadmath0 libgfortran5"
