"""The Docker engine connection (the docker SDK; never the docker CLI)."""

from __future__ import annotations

import os
from typing import Optional

import docker
from docker.errors import APIError, DockerException

from runner.errors import UserError

ENGINE_HELP = ("No Docker engine answers. Start one: on Debian/Ubuntu as root `make engine` installs "
               "docker.io and starts dockerd; elsewhere start Docker (e.g. `sudo systemctl start docker`) and "
               "make sure DOCKER_HOST or /var/run/docker.sock points at it. Hosts without Docker can use "
               "`--backend local`.")

# What the engine says when it has no GPU support (no nvidia-container-toolkit), and what we say instead.
GPU_REFUSED_MARKERS = ('could not select device driver', 'unknown or invalid runtime name: nvidia')
GPU_HELP = ("the Docker engine cannot hand out GPUs ({detail}). Install the NVIDIA Container Toolkit "
            "(package nvidia-container-toolkit), register it with Docker: "
            "`sudo nvidia-ctk runtime configure --runtime=docker`, then restart dockerd "
            "(`sudo systemctl restart docker`, or stop and start it again with `make engine`); "
            "or run the CPU variants with --device cpu.")

# Enough pooled connections for parallel cells: each one holds a wait and a log stream.
MAX_POOL_SIZE = 64


def try_connect(timeout: int = 10, max_pool_size: int = MAX_POOL_SIZE) -> Optional[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=timeout, max_pool_size=max_pool_size)
        client.ping()
        return client
    except DockerException:
        return None
    except Exception:  # a DOCKER_HOST the SDK cannot parse, a socket without permission, ...
        return None


def connect(timeout: int = 600, max_pool_size: int = MAX_POOL_SIZE) -> docker.DockerClient:
    """A client whose engine answered a ping; UserError (exit 2, one paragraph) otherwise."""
    client = try_connect(timeout, max_pool_size)
    if client is None:
        where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise UserError(ENGINE_HELP + f" (Tried {where}.)")
    return client


def existing_tags(tags: list[str]) -> Optional[set]:
    """Which of these tags the engine has; None when no engine answers."""
    client = try_connect(timeout=5)
    if client is None:
        return None
    have = set()
    for image in client.images.list(name="dlbench/*"):
        have.update(image.tags)
    return {t for t in tags if t in have}


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.api.inspect_image(ref)
        return True
    except docker.errors.ImageNotFound:
        return False
    except APIError as exc:
        if exc.status_code == 404:
            return False
        raise


def engine_has_nvidia_runtime(client: docker.DockerClient) -> bool:
    try:
        return "nvidia" in (client.info().get("Runtimes") or {})
    except DockerException:
        return False


def gpu_refusal(exc: BaseException) -> Optional[str]:
    """The user-facing message when `exc` is the engine refusing a GPU request, else None."""
    text = str(getattr(exc, "explanation", None) or exc)
    if any(marker in text for marker in GPU_REFUSED_MARKERS):
        return GPU_HELP.format(detail=f"it answered: {text.strip()}")
    return None


def probe_gpu_support(client: docker.DockerClient, image: str, count: int = 1) -> Optional[str]:
    """Really ask the engine for a GPU container (a `true` in `image`). None when it can hand GPUs out,
    else the message naming nvidia-container-toolkit."""
    request = docker.types.DeviceRequest(count=count, capabilities=[["gpu"]])
    container = None
    try:
        # locked down like a cell's container (runner/backends/docker.py): it only has to start
        container = client.containers.create(image, entrypoint=["true"], command=[], network_mode="none",
                                             device_requests=[request], labels={"dlbench.probe": "gpu"},
                                             user="1000:1000", cap_drop=["ALL"], security_opt=["no-new-privileges"],
                                             read_only=True, pids_limit=64, mem_limit="256m")
        container.start()
        container.wait(timeout=60)
        return None
    except APIError as exc:
        message = gpu_refusal(exc)
        if message:
            return message
        return GPU_HELP.format(detail=f"a test container with one GPU failed: {exc.explanation or exc}")
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except DockerException:
                pass


