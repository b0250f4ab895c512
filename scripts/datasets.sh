#!/usr/bin/env bash
# Datasets a Debian host can install from its own mirror: the real
# Fashion-MNIST (package dataset-fashion-mnist) under /usr/share/datasets.
set -euo pipefail
if [ -d /usr/share/datasets/fashion-mnist ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "datasets: installing Debian's dataset-fashion-mnist (the real Fashion-MNIST)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
else
  echo "datasets: Fashion-MNIST not found at /usr/share/datasets/fashion-mnist; install Debian/Ubuntu's" \
       "dataset-fashion-mnist package or pass --data-dir DIR holding fashion-mnist/ (idx files)." >&2
fi
