"""The Docker engine connection (the docker SDK; never the docker CLI)."""

from __future__ import annotations

from typing import Optional

import docker
from docker.errors import DockerException

from runner.errors import UserError

ENGINE_HELP = ("No Docker engine answers. Start one: on Debian/Ubuntu as root `make engine` installs "
               "docker.io and starts dockerd; elsewhere start Docker (e.g. `sudo systemctl start docker`) and "
               "make sure DOCKER_HOST or /var/run/docker.sock points at it. Hosts without Docker can use "
               "`--backend local`.")


def try_connect(timeout: int = 10) -> Optional[docker.DockerClient]:
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except DockerException:
        return None


def connect(timeout: int = 600) -> docker.DockerClient:
    client = try_connect(timeout)
    if client is None:
        raise UserError(ENGINE_HELP)
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
