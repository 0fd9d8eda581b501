"""Transform registry: named, typed, pure image transforms and the chains built from specs.

``registry`` holds the framework (``Param``, ``Transform``, ``register``), ``chain`` the
``Chain`` and its spec parser, and each family module registers its transforms on import.
Nothing here knows about Kafka or Flask.
"""
from pipeline.transforms import background, faces, geometry, neighbourhood, overlays, pointwise
from pipeline.transforms.chain import IDENTITY_NAMES, Chain, parse_spec
from pipeline.transforms.faces import FACE_CASCADE, load_face_cascade, scale_boxes
from pipeline.transforms.geometry import INTERPOLATIONS
from pipeline.transforms.neighbourhood import pixelate_blocks
from pipeline.transforms.overlays import draw_text
from pipeline.transforms.pointwise import SEPIA_BGR
from pipeline.transforms.registry import (
    REGISTRY,
    Param,
    Transform,
    TransformError,
    as_bgr,
    catalog,
    describe,
    format_value,
    lookup,
    parse_color,
    register,
)

__all__ = [
    "FACE_CASCADE", "IDENTITY_NAMES", "INTERPOLATIONS", "REGISTRY", "SEPIA_BGR", "Chain", "Param",
    "Transform", "TransformError", "as_bgr", "background", "catalog", "describe", "draw_text", "faces",
    "format_value", "geometry", "load_face_cascade", "lookup", "neighbourhood", "overlays",
    "parse_color", "parse_spec", "pixelate_blocks", "pointwise", "register", "scale_boxes",
]
