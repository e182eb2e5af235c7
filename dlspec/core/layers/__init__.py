"""The layer registry: every layer kind is defined here, once.

A `LayerKind` holds the kind's attributes (with types, defaults and docs), its
shape rule, its parameter shapes (which give parameter counts and check weight
ties), the Python expression that constructs its module, and the expression
that calls it in the generated forward. The JSON Schema, the reference docs
and the builder are all derived from this table; nothing else in dlspec
branches on a layer kind. The kinds live in one module per family, listed here.
"""
from . import activations, attention, combine, dense, embedding, norm, recurrent, shape, spatial, tensors  # noqa: F401
from .base import DTYPES, FLOATS, INTS, REGISTRY, Attr, LayerKind, ShapeError, kind_hint, register
from .combine import broadcast

__all__ = ["DTYPES", "FLOATS", "INTS", "REGISTRY", "Attr", "LayerKind", "ShapeError", "broadcast", "kind_hint",
           "register"]
