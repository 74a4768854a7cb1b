"""Container images per component; must match ``images/<name>/Dockerfile`` (checked by tests).

The tag is the project version; override the registry at build time with ``scripts/build-images.sh``
(``REGISTRY=...``) and at compile time with ``NETDIFFUSION_IMAGE_REGISTRY`` (read when this module is
imported, i.e. before the component decorators run).
"""

from __future__ import annotations

import os

REGISTRY = os.environ.get("NETDIFFUSION_IMAGE_REGISTRY", "ghcr.io/netdiffusion")
VERSION = "0.1.0"

# image name (folder under images/) -> full reference
IMAGES: dict[str, str] = {
    name: f"{REGISTRY}/netdiffusion-{name}:{VERSION}" for name in ("base", "train", "generate", "validate")
}

# component folder -> image name: CUDA torch where a GPU helps, tshark/tcpreplay for validation
COMPONENT_IMAGES: dict[str, str] = {
    "encode": "base",
    "train": "train",
    "generate": "generate",
    "repair": "base",
    "validate": "validate",
    "evaluate": "base",
    "register": "base",
}


def image_for(component: str) -> str:
    """Full image reference for a component folder name."""
    return IMAGES[COMPONENT_IMAGES[component]]
