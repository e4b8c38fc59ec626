"""One benchmark run as a frozen, hashable configuration, and the grid of them.

A :class:`RunConfig` names everything that decides a run's numbers: the data set
and split, the prior (noise model, structure, noise parameters), the architecture,
the inference method with its training budget and options, the seed and the number
of posterior samples used for the test metrics. :func:`config_hash` is the sha256
of its canonical JSON, the same in every Python process and for every order of the
option dicts: the results store is keyed by it, so a rerun finds what is done.

Where a run executes (``device``) and what it is called in a table (``label``)
are not part of the hash: the same configuration on another device or under
another name is the same run. ``holdout`` (a validation part cut from the
training split) is hashed only when set, so the hashes of runs without one are
those of earlier versions.

:func:`expand_grid` takes the product of list options and validates every name up
front, before any work: an unknown data set, noise model, structure, inference
method or architecture raises :class:`~bnn_priors.UnknownNameError` listing the
valid choices; a split outside a data set's range raises
:class:`~bnn_priors.InvalidParameterError`. The names come from the registries:
:data:`bnn_priors.data.DATASETS`, the priors, the structures,
:data:`models.ARCHITECTURES` and :data:`~bnn_priors.suite.methods.METHODS`.

Imports: :mod:`bnn_priors` (errors, priors, structures, data registry), :mod:`models`
(the architectures' registry) and :mod:`bnn_priors.suite.methods`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bnn_priors.data import SOURCES, dataset_splits
from bnn_priors.errors import InvalidParameterError, lookup, normalize_name
from bnn_priors.scale_mixture import PRIOR_NAMES, UNSTRUCTURED_PRIORS
from bnn_priors.structures import check_structure
from bnn_priors.suite.methods import METHODS, get_method
from models import ARCHITECTURES

#: Bump when the meaning of a field changes, so old results are not reused.
HASH_VERSION = 1
#: Posterior samples used for the test RMSE and log-likelihood.
DEFAULT_EVAL_SAMPLES = 100
#: ``{kind}-{depth}x{width}``, the kind a key of :data:`models.ARCHITECTURES`.
ARCH_PATTERN = "{" + "|".join(ARCHITECTURES) + "}-{depth}x{width}"
#: The grid axes: one column each in the results store.
AXES = ("dataset", "split", "noise", "structure", "arch", "inference", "budget", "seed")


@dataclass(frozen=True)
class Architecture:
    """A parsed :data:`ARCH_PATTERN` (e.g. ``mlp-1x50``): ``depth`` hidden layers of ``width`` units."""

    kind: str
    depth: int
    width: int

    @property
    def hidden(self) -> tuple[int, ...]:
        return (self.width,) * self.depth

    def __str__(self) -> str:
        return f"{self.kind}-{self.depth}x{self.width}"


def parse_arch(arch: str) -> Architecture:
    """Parse ``mlp-1x50`` or ``resnet-2x50`` (kind, number of hidden layers, width).

    An unknown kind raises :class:`~bnn_priors.UnknownNameError`, any other
    misspelling :class:`~bnn_priors.InvalidParameterError`.
    """
    match = re.fullmatch(r"(.+)-([0-9]+)x([0-9]+)", normalize_name(arch))
    if not match:
        raise InvalidParameterError(
            f"architecture {arch!r} is not of the form {ARCH_PATTERN}, e.g. mlp-1x50 or resnet-2x50"
        )
    kind, depth, width = lookup("architecture", match.group(1), ARCHITECTURES), int(match.group(2)), int(match.group(3))
    if depth < 1 or width < 1:
        raise InvalidParameterError(f"architecture {arch!r}: depth and width must be at least 1")
    return Architecture(kind, depth, width)


def _canonical_value(label: str, value: Any) -> Any:
    """A JSON-able copy of an option value; numpy scalars become Python numbers."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            raise InvalidParameterError(f"option {label} must be finite, got {value!r}")
        return value
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical_value(label, v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _canonical_value(f"{label}.{k}", v) for k, v in sorted(value.items())}
    raise InvalidParameterError(
        f"option {label} must be a number, string, bool, None or a list/dict of them, got {value!r}"
    )


def _canonical_dict(label: str, value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidParameterError(f"{label} must be a dict, got {value!r}")
    return {str(k): _canonical_value(f"{label}[{k!r}]", v) for k, v in sorted(value.items())}


@dataclass(frozen=True)
class RunConfig:
    """One run of the benchmark.

    ``budget`` is the training budget in the method's own unit
    (:attr:`budget_unit`): optimisation steps for SVI (``svi``, ``svi-em``, ``map-em``,
    ``vd``), epochs for ``mc-dropout``, posterior samples for ``nuts``.
    ``options`` are extra keyword arguments of the inference backend (e.g.
    ``{"lr": 0.001}``); ``prior`` the keyword arguments of
    :func:`bnn_priors.prior` besides noise and structure (``sigma0`` and the noise
    parameters, e.g. ``{"p": 0.05}``). ``label`` names the method in tables and is
    not hashed. ``holdout`` (a fraction in (0, 1), or None) trains on the first
    ``1 - holdout`` of the training split in file order and records the metrics
    of the rest (validation) beside the test metrics (see
    :meth:`bnn_priors.data.Dataset.split`).
    """

    dataset: str
    split: int
    noise: str
    structure: str
    arch: str
    inference: str
    budget: int
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    prior: dict[str, Any] = field(default_factory=dict)
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    label: str | None = field(default=None, compare=False)
    holdout: float | None = None

    def __post_init__(self) -> None:
        def put(name, value):
            object.__setattr__(self, name, value)

        for name in ("split", "budget", "seed", "eval_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise InvalidParameterError(f"{name} must be an integer, got {value!r}")
            put(name, int(value))
        if self.split < 0 or self.seed < 0:
            raise InvalidParameterError(f"split and seed must be non-negative, got {self.split} and {self.seed}")
        if self.budget < 1 or self.eval_samples < 1:
            raise InvalidParameterError(f"budget and eval_samples must be positive, got {self.budget} and {self.eval_samples}")
        put("dataset", check_dataset(self.dataset))
        put("noise", check_noise(self.noise))
        put("structure", check_structure(self.structure))
        put("inference", check_inference(self.inference))
        put("arch", check_arch(self.arch))
        put("holdout", check_holdout(self.holdout))
        put("options", _canonical_dict("options", self.options))
        put("prior", _canonical_dict("prior", self.prior))
        n = dataset_splits(self.dataset)
        if self.split >= n:
            raise InvalidParameterError(f"data set {self.dataset!r} has splits 0-{n - 1}, not {self.split}")
        put("_hash", _sha256(self.hashed_fields()))

    def __hash__(self) -> int:
        return hash(self._hash)

    # --------------------------------------------------------------- identity
    def hashed_fields(self) -> dict[str, Any]:
        """Everything that decides the run's numbers (not ``label``; ``holdout`` only when set)."""
        fields = {
            "dataset": self.dataset,
            "split": self.split,
            "noise": self.noise,
            "structure": self.structure,
            "arch": self.arch,
            "inference": self.inference,
            "budget": self.budget,
            "seed": self.seed,
            "options": self.options,
            "prior": self.prior,
            "eval_samples": self.eval_samples,
        }
        if self.holdout is not None:
            fields["holdout"] = self.holdout
        return fields

    @property
    def hash(self) -> str:
        """sha256 (hex) of the canonical JSON of :meth:`hashed_fields`."""
        return self._hash  # type: ignore[attr-defined]

    @property
    def method_key(self) -> str:
        """Hash of the fields that define a table column: all but dataset, split and seed."""
        fields = self.hashed_fields()
        for name in ("dataset", "split", "seed"):
            fields.pop(name)
        return _sha256(fields)[:16]

    def group_key(self) -> str:
        """Configs with equal keys differ only in split or seed: they train as one batched job."""
        fields = self.hashed_fields()
        fields.pop("split")
        fields.pop("seed")
        return canonical_json(fields)

    @property
    def architecture(self) -> Architecture:
        return parse_arch(self.arch)

    @property
    def budget_unit(self) -> str:
        return get_method(self.inference).budget_unit

    def to_dict(self) -> dict[str, Any]:
        return {**self.hashed_fields(), "label": self.label}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        return cls(**{k: v for k, v in data.items()})

    def describe(self) -> str:
        """A short human-readable summary: ``diabetes/0 half-cauchy/ard mlp-1x50 svi``."""
        text = f"{self.dataset}/{self.split} {self.noise}/{self.structure} {self.arch} {self.inference}"
        return text if self.holdout is None else f"{text} holdout {self.holdout:g}"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same text for equal values in any process."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _sha256(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json({"v": HASH_VERSION, **fields}).encode("ascii")).hexdigest()


def config_hash(config: RunConfig) -> str:
    """sha256 (hex) of the canonical JSON of the config's hashed fields."""
    return config.hash


# ------------------------------------------------------------------ parsing lists
def parse_list(value: str | Iterable[str] | None) -> list[str] | None:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; a list is taken as is; ``None`` stays ``None``."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    out = [item.strip() for item in items if item.strip()]
    if not out:
        raise InvalidParameterError(f"expected a comma-separated list, got {value!r}")
    return out


def parse_int_list(label: str, value: str | int | Iterable[int] | None) -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return [int(value)]
    out = []
    for item in parse_list(value) if isinstance(value, str) else list(value):
        try:
            out.append(int(item))
        except (TypeError, ValueError):
            raise InvalidParameterError(f"{label} must be integers, got {item!r} in {value!r}") from None
    return out


def parse_splits(spec: str | int | Iterable[int] | None) -> list[int] | None:
    """Parse a split selection: ``"0-4"``, ``"0,3,5"``, ``"0-2,7"`` or ``"all"`` (``None``).

    Returns the sorted, de-duplicated split numbers, or ``None`` for all splits.
    """
    if spec is None:
        return None
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        spec = [int(spec)]
    if not isinstance(spec, str):
        values = [int(v) for v in spec]
        if any(v < 0 for v in values) or not values:
            raise InvalidParameterError(f"splits must be non-negative integers, got {spec!r}")
        return sorted(set(values))
    text = spec.strip().lower()
    if text == "all":
        return None
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", part)
        if not match:
            raise InvalidParameterError(
                f"cannot parse splits {spec!r}: use a range like 0-4, a list like 0,3,5, or 'all'"
            )
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise InvalidParameterError(f"cannot parse splits {spec!r}: range {part} is empty")
        out.update(range(lo, hi + 1))
    return sorted(out)


# --------------------------------------------------------------------- validation
def check_dataset(name: str) -> str:
    return lookup("data set", name, SOURCES)


def check_holdout(value: Any) -> float | None:
    """``None``, or a validation fraction strictly between 0 and 1 (as a float)."""
    if value is None:
        return None
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok or not math.isfinite(float(value)) or not 0 < float(value) < 1:
        raise InvalidParameterError(f"holdout must be a fraction strictly between 0 and 1 (e.g. 0.2), got {value!r}")
    return float(value)


def check_noise(name: str) -> str:
    return lookup("prior", name, PRIOR_NAMES)  # noise models, and the normal and log-uniform priors


def check_inference(name: str) -> str:
    return lookup("inference method", name, METHODS)


def check_arch(arch: str) -> str:
    return str(parse_arch(arch))


def expand_grid(
    datasets: str | Sequence[str],
    splits: str | Sequence[int] | None = None,
    noise: str | Sequence[str] = "half-cauchy",
    structure: str | Sequence[str] = "ard",
    arch: str | Sequence[str] = "mlp-1x50",
    inference: str | Sequence[str] = "svi",
    budget: int | Mapping[str, int] | None = None,
    seeds: int | str | Sequence[int] = 0,
    options: Mapping[str, Any] | None = None,
    prior: Mapping[str, Any] | None = None,
    eval_samples: int = DEFAULT_EVAL_SAMPLES,
    label: str | None = None,
    holdout: float | None = None,
) -> list[RunConfig]:
    """The product of the list options as :class:`RunConfig` objects, every name checked first.

    Each list option takes a list or a comma-separated string. ``splits`` is a
    split selection (see :func:`parse_splits`; ``None``/``"all"`` is every split of
    each data set). ``budget`` is one number for every method, a dict by budget
    unit (``{"steps": 500, "epochs": 20}``) or by method name, or ``None`` for
    each method's default. Structures are crossed with noise models except for
    the ``normal`` and ``log-uniform`` priors, which have no shared scales and
    take structure ``none`` only: for them the structure axis collapses to
    ``none``. ``holdout`` (a fraction, or None) is set on every run.
    """
    names = {
        "datasets": [check_dataset(d) for d in parse_list(datasets)],
        "noise": [check_noise(n) for n in parse_list(noise)],
        "structure": [check_structure(s) for s in parse_list(structure)],
        "arch": [check_arch(a) for a in parse_list(arch)],
        "inference": [check_inference(i) for i in parse_list(inference)],
    }
    holdout = check_holdout(holdout)
    seed_list = parse_int_list("seeds", seeds)
    if not seed_list or any(s < 0 for s in seed_list):
        raise InvalidParameterError(f"seeds must be non-negative integers, got {seeds!r}")
    chosen = parse_splits(splits)
    split_lists = {}
    for name in names["datasets"]:
        n = dataset_splits(name)
        if chosen is None:
            split_lists[name] = list(range(n))
        else:
            bad = [k for k in chosen if k >= n]
            if bad:
                raise InvalidParameterError(
                    f"data set {name!r} has splits 0-{n - 1}; asked for {bad[0]}"
                    + (f"-{bad[-1]}" if len(bad) > 1 else "")
                )
            split_lists[name] = chosen

    def budget_for(method_name: str) -> int:
        method = get_method(method_name)
        if budget is None:
            return method.default_budget
        if isinstance(budget, Mapping):
            for key in (method.name, method.budget_unit):
                if budget.get(key) is not None:
                    return int(budget[key])
            return method.default_budget
        return int(budget)

    configs: list[RunConfig] = []
    seen: set[str] = set()
    combos = itertools.product(names["datasets"], names["noise"], names["structure"], names["arch"], names["inference"])
    for dataset, nz, st, ar, inf in combos:
        if nz in UNSTRUCTURED_PRIORS:
            st = "none"
        for split, seed in itertools.product(split_lists[dataset], seed_list):
            cfg = RunConfig(
                dataset=dataset, split=split, noise=nz, structure=st, arch=ar, inference=inf,
                budget=budget_for(inf), seed=seed, options=dict(options or {}), prior=dict(prior or {}),
                eval_samples=eval_samples, label=label, holdout=holdout,
            )
            if cfg.hash not in seen:
                seen.add(cfg.hash)
                configs.append(cfg)
    return configs


__all__ = [
    "AXES",
    "Architecture",
    "DEFAULT_EVAL_SAMPLES",
    "RunConfig",
    "canonical_json",
    "check_holdout",
    "config_hash",
    "expand_grid",
    "parse_arch",
    "parse_list",
    "parse_splits",
]
