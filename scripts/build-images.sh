#!/usr/bin/env bash
# Build the container images (images/<name>/Dockerfile) with the tags the components reference
# (components/images.py): $REGISTRY/netdiffusion-<name>:<version>. Needs a Docker engine.
#   REGISTRY=registry.example.com/ml PUSH=1 scripts/build-images.sh [base train generate validate]
# Order matters: validate is built FROM base and generate FROM train (BASE_IMAGE / TRAIN_IMAGE args).
set -euo pipefail
cd "$(dirname "$0")/.."
REGISTRY="${REGISTRY:-ghcr.io/netdiffusion}"
VERSION="$(.venv/bin/python -c 'from components.images import VERSION; print(VERSION)' 2>/dev/null \
           || sed -n 's/^VERSION = "\(.*\)"/\1/p' components/images.py)"
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  echo "build-images: no Docker engine here; run 'make image-specs' to check the Dockerfiles without one" >&2
  exit 1
fi
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(base train generate validate)
for name in "${names[@]}"; do
  tag="$REGISTRY/netdiffusion-$name:$VERSION"
  echo "build-images: $tag"
  DOCKER_BUILDKIT=1 docker build -f "images/$name/Dockerfile" -t "$tag" \
    --build-arg "BASE_IMAGE=$REGISTRY/netdiffusion-base:$VERSION" \
    --build-arg "TRAIN_IMAGE=$REGISTRY/netdiffusion-train:$VERSION" .
  if [ "${PUSH:-0}" = "1" ]; then docker push "$tag"; fi
done
