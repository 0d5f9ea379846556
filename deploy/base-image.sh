#!/usr/bin/env bash
# Makes the base image `debian:bookworm-slim` on this machine when it is missing, without a
# registry: debootstrap a minimal Debian bookworm from Debian's packages (the mirror apt
# uses here, or DEBIAN_MIRROR), trim it, and `docker import` it under that tag. Users with a
# registry never need this: `docker build` pulls the same tag.
#   deploy/base-image.sh            (BASE_IMAGE overrides the tag)
set -euo pipefail
tag=${BASE_IMAGE:-debian:bookworm-slim}
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag is present"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "base-image.sh: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "making $tag with debootstrap from $mirror (about a minute)..."
debootstrap --variant=minbase bookworm "$dir" "$mirror" >/dev/null
# What a slim image leaves out: package lists, docs, man pages, caches.
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/usr/share/doc/* \
  "$dir"/usr/share/man/* "$dir"/usr/share/locale/*
tar -C "$dir" -c . | docker import -c 'CMD ["bash"]' - "$tag" >/dev/null
echo "base image $tag made"
