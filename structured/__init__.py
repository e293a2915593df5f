"""Structured and sparse linear layers behind one contract (see structured/base.py)."""

from structured.base import Core, StructuredLinear, StructureError
from structured.registry import FAMILIES, family, hyperparameters, make

__all__ = ["Core", "StructuredLinear", "StructureError", "FAMILIES", "family", "hyperparameters", "make"]
