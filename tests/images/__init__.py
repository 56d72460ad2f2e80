"""Container images for the tests, built for real with buildah (see ``tests/images/build.py``).

    from tests.images import ensure_image, ensure_model_image, ensure_adapter_image
    controller = ensure_image("controller")      # BuiltImage(ref=..., archive=...)

``python -m tests.images --help`` is the same from a shell.
"""

from tests.images.api import ensure_adapter_image, ensure_image, ensure_model_image
from tests.images.build import BuiltImage
from tests.images.errors import BuildError, ImageError, PrerequisiteError

__all__ = [
    "BuildError",
    "BuiltImage",
    "ImageError",
    "PrerequisiteError",
    "ensure_adapter_image",
    "ensure_image",
    "ensure_model_image",
]
