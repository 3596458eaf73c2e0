"""Directory layout of an offline bundle.

The builder (oneclick.bundle) writes this layout and the role variables of
`install --bundle` (oneclick.rolevars) point the roles at it, so both read
it from here.
"""

from __future__ import annotations

MANIFEST_NAME = "manifest.json"
PACKAGES_DIR = "packages"
IMAGES_DIR = "images"
WEIGHTS_DIR = "weights"
WHEELS_DIR = "wheels"


def weights_dir_name(model_id: str) -> str:
    """Return the directory name of a model's weights: the model ID with / as __."""
    return model_id.replace("/", "__")


def weights_dir(model_id: str) -> str:
    """Return the directory, relative to a bundle, that contains ``model_id``'s weights."""
    return f"{WEIGHTS_DIR}/{weights_dir_name(model_id)}"
