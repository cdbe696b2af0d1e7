#!/usr/bin/env bash
# Build the container base image from Debian's packages, with no image registry: debootstrap a minimal
# Debian 12 (bookworm) with Python 3.11 and venv, trim what an image never needs, `docker import` it.
#
# Usage (as root, with dockerd running):  bash tools/build-base-image.sh [TAG]     (default trainkit-base:bookworm)
# Then:  docker build --network host --build-arg PYTHON_IMAGE=trainkit-base:bookworm -t trainkit .
# Idempotent: an existing TAG is kept (REBUILD=1 rebuilds it). MIRROR sets the Debian mirror.
# The image trusts what this machine trusts: CA certificates added here (EXTRA_CA, default the .crt files in
# /usr/local/share/ca-certificates, e.g. a proxy's) are added to the image, so pip inside `docker build` reaches
# the package index through the same proxy.
set -euo pipefail
TAG=${1:-trainkit-base:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
if docker image inspect "$TAG" >/dev/null 2>&1 && [ -z "${REBUILD:-}" ]; then
  echo "$TAG exists ($(docker image inspect "$TAG" --format '{{.Size}}') bytes); REBUILD=1 to rebuild"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "needs debootstrap: apt-get install debootstrap" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# python-is-python3: `python` as in the official python images, which the Dockerfile's HEALTHCHECK uses
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  bookworm "$work/rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
shopt -s nullglob
extra=(${EXTRA_CA:-/usr/local/share/ca-certificates/*.crt})
if [ ${#extra[@]} -gt 0 ]; then
  cp "${extra[@]}" "$work/rootfs/usr/local/share/ca-certificates/"
  chroot "$work/rootfs" update-ca-certificates >/dev/null
  echo "added ${#extra[@]} CA certificate(s) from this machine: ${extra[*]##*/}"
fi
# package caches and lists, documentation, manuals and translations: about half the tree, never used in the image
rm -rf "$work"/rootfs/var/cache/apt/* "$work"/rootfs/var/lib/apt/lists/* \
       "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/* "$work"/rootfs/usr/share/locale/* \
       "$work"/rootfs/usr/share/info/*
tar -C "$work/rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$TAG" >/dev/null
echo "built $TAG ($(docker image inspect "$TAG" --format '{{.Size}}') bytes) from Debian bookworm"
