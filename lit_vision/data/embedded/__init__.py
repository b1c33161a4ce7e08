"""Sample data that ships inside the package (no download): digits and synthetic shapes, written once to a cache."""

from lit_vision.data.embedded.cache import default_cache_dir, write_once
from lit_vision.data.embedded.digits import write_digits
from lit_vision.data.embedded.shapes import SHAPES_CLASSES, shapes_paths, write_shapes

__all__ = ["SHAPES_CLASSES", "default_cache_dir", "shapes_paths", "write_digits", "write_once", "write_shapes"]
