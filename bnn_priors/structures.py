"""Scale structures: which weights of a layer share one scale.

A layer's weight matrix ``W`` has shape ``(in_features, out_features)``: row ``i``
holds the outgoing weights of input unit ``i``. A structure is the set of scale
tensors whose broadcast product gives every weight its scale:

================  ===============================================  ========================
structure         scale tensors (shape)                            noise it corresponds to
================  ===============================================  ========================
``none``          ``weight_scale`` (in, out): one per weight       DropConnect
``ard``           ``unit_scale`` (in, 1): one per input unit       dropout on units (ARD)
``add``           ``layer_scale`` (1, 1): one per layer            stochastic depth (ADD)
``ard-add``       ``unit_scale`` (in, 1) and ``layer_scale`` (1, 1)  both, multiplied
================  ===============================================  ========================
"""

from __future__ import annotations

from bnn_priors.errors import lookup

STRUCTURES: dict[str, tuple[str, ...]] = {
    "none": ("weight_scale",),
    "ard": ("unit_scale",),
    "add": ("layer_scale",),
    "ard-add": ("unit_scale", "layer_scale"),
}

DESCRIPTIONS: dict[str, str] = {
    "none": "one scale per weight",
    "ard": "one scale per input unit, shared by its outgoing weights (automatic relevance determination)",
    "add": "one scale per layer (automatic depth determination)",
    "ard-add": "per-unit scale times per-layer scale",
}


def check_structure(structure: str) -> str:
    """Normalise a structure name, raising a ValueError that lists the valid ones."""
    return lookup("structure", structure, STRUCTURES)


def scale_shape(kind: str, in_features: int, out_features: int) -> tuple[int, int]:
    """The shape of one scale tensor of a layer (it broadcasts against ``(in, out)``)."""
    return {
        "weight_scale": (in_features, out_features),
        "unit_scale": (in_features, 1),
        "layer_scale": (1, 1),
    }[kind]


def scale_shapes(structure: str, in_features: int, out_features: int) -> dict[str, tuple[int, int]]:
    """The scale tensors of a layer under a structure: ``{name: shape}``."""
    return {
        kind: scale_shape(kind, in_features, out_features)
        for kind in STRUCTURES[check_structure(structure)]
    }
