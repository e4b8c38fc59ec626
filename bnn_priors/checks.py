"""Checks of numeric arguments, shared by the networks (``models``) and the backends (``inference``).

Each returns the value as a plain Python number or raises
:class:`~bnn_priors.InvalidParameterError` naming the argument and the value as given.
Booleans are refused although they are integers: ``steps=True`` is a mistake.
"""

from __future__ import annotations

import math

import numpy as np

from bnn_priors.errors import InvalidParameterError


def check_bool(label: str, value) -> bool:
    """``value`` as a bool: ``True`` or ``False`` (NumPy's too), nothing else."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidParameterError(f"{label} must be True or False, got {value!r}")
    return bool(value)


def check_positive_int(label: str, value) -> int:
    """``value`` as an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidParameterError(f"{label} must be a positive integer, got {value!r}")
    return int(value)


def check_nonnegative_int(label: str, value) -> int:
    """``value`` as an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidParameterError(f"{label} must be a non-negative integer, got {value!r}")
    return int(value)


def check_positive_float(label: str, value) -> float:
    """``value`` as a finite float > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
        math.isfinite(value) and value > 0
    ):
        raise InvalidParameterError(f"{label} must be a positive number, got {value!r}")
    return float(value)


def check_nonnegative_float(label: str, value) -> float:
    """``value`` as a finite float >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
        math.isfinite(value) and value >= 0
    ):
        raise InvalidParameterError(f"{label} must be a non-negative number, got {value!r}")
    return float(value)
