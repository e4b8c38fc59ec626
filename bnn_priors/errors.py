"""The project's error family.

User mistakes (an unknown name, an invalid parameter, bad data, a combination a
backend cannot do, a data file that is missing or corrupt) raise a subclass of
:class:`BNNPriorsError`, itself a :class:`ValueError`, at the edge where the
input arrives. The command line prints these as one line and exits with status 2.

A fit that runs away (loss or samples turning NaN/inf) raises
:class:`FitDivergedError`, which names the step and the likely cause.
"""

from __future__ import annotations

from collections.abc import Iterable


class BNNPriorsError(ValueError):
    """Base class of every error caused by what the user asked for."""


class UnknownNameError(BNNPriorsError):
    """A name (noise model, structure, backend, data set, preset...) that does not exist."""

    def __init__(self, kind: str, name: object, choices: Iterable[str]):
        self.kind, self.name, self.choices = kind, name, sorted(choices)
        super().__init__(
            f"unknown {kind} {name!r}; valid choices are: {', '.join(self.choices)}"
        )


def normalize_name(name: object) -> str:
    """The spelling every name look-up accepts: case, surrounding spaces and ``_`` for ``-`` do not matter."""
    return str(name).strip().lower().replace("_", "-")


def lookup(kind: str, name: object, registry: Iterable[str]) -> str:
    """The registered key that ``name`` spells (see :func:`normalize_name`), else :class:`UnknownNameError`.

    ``kind`` names the registry in the message (``"data set"``, ``"table format"``);
    ``registry`` is anything that lists its names (a dict by name, a tuple). This is
    the one name look-up of the project, so ``Half_Cauchy`` is ``half-cauchy`` everywhere.
    """
    key = normalize_name(name)
    if key not in registry:
        raise UnknownNameError(kind, name, registry)
    return key


class InvalidParameterError(BNNPriorsError):
    """A parameter value outside its valid range, or a parameter that does not exist."""


class DataError(BNNPriorsError):
    """Input data that cannot be used: NaN or inf values, wrong shapes, missing or corrupt files."""


class UnsupportedCombinationError(BNNPriorsError):
    """An inference backend was given a prior or model it cannot handle."""


class CheckpointInUseError(RuntimeError):
    """A fit whose checkpoint another live process holds (:meth:`inference.training.Checkpoint.claim`):
    that process is training it now. ``holder`` says which process, as it wrote itself down."""

    def __init__(self, message: str, holder: str = ""):
        super().__init__(message)
        self.holder = holder


class FitDivergedError(RuntimeError):
    """A fit whose loss or samples became NaN or infinite.

    ``replicas``: the replicas of a batched fit whose loss did, where the backend tells them apart
    (their fits are independent of the others', which stay finite); ``None`` where it does not.
    """

    def __init__(self, message: str, replicas: tuple[int, ...] | None = None):
        super().__init__(message)
        self.replicas = replicas
