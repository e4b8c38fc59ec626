"""Named benchmark suites: ``bnn-priors bench --preset NAME``.

A preset is a list of blocks; each block is a grid (the product of its lists)
with its own training budget, options and, optionally, the column label its
runs get in tables. Options given on the command line override the preset's
values in every block: ``--datasets``, ``--splits``, ``--seed``, a budget
(``--steps`` for the SVI methods, ``--epochs`` for MC dropout, ``--samples`` for
NUTS) and the grid axes ``--noise``, ``--structure``, ``--arch``,
``--inference`` (overriding an axis drops the preset's labels, which would no
longer describe the runs; overriding ``--noise`` drops the preset's noise
parameters and ``--inference`` its backend options, which belong to the
replaced noise models and methods).

``quick``
    diabetes (ships with scikit-learn, nothing to download), splits 0-4, four
    methods with short training: a first look in about a minute on two CPU cores.
``nalisnick2019``
    The UCI experiment of Nalisnick et al. (2019), "Dropout as a Structured
    Shrinkage Prior": MC dropout (Bernoulli noise, ARD structure) on ``mlp-1x50``;
    ARD, ADD and ARD-ADD priors on ``resnet-2x50`` with inverse-gamma (noise
    ``inverse-nakagami``) and half-Cauchy hyper-priors fitted by ``svi-em``; all
    20 splits of boston, concrete, energy, kin8nm, power, wine and yacht
    (``--datasets`` adds naval and protein, which the paper leaves out).

Every training setting of the presets is a named constant below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bnn_priors.errors import UnknownNameError
from bnn_priors.suite.config import RunConfig, expand_grid

# ------------------------------------------------------------------ quick preset
QUICK_DATASETS = ("diabetes",)
QUICK_SPLITS = "0-4"
QUICK_SVI_STEPS = 2000
QUICK_SVI_LR = 0.01
QUICK_MC_DROPOUT_EPOCHS = 200
QUICK_DROPOUT_P = 0.05

# ---------------------------------------------------------- nalisnick2019 preset
NALISNICK_DATASETS = ("boston", "concrete", "energy", "kin8nm", "power", "wine", "yacht")
#: Not in the paper's table; add them with ``--datasets``.
NALISNICK_OPTIONAL_DATASETS = ("naval", "protein")
NALISNICK_SPLITS = "all"
NALISNICK_ARCH_DROPOUT = "mlp-1x50"
NALISNICK_ARCH_SHRINKAGE = "resnet-2x50"
NALISNICK_STRUCTURES = ("ard", "add", "ard-add")
NALISNICK_HYPERPRIORS = ("inverse-nakagami", "half-cauchy")
NALISNICK_MC_DROPOUT_EPOCHS = 400
NALISNICK_MC_DROPOUT_P = 0.05
NALISNICK_MC_DROPOUT_OPTIONS: dict[str, Any] = {"batch_size": 128, "lr": 1e-3}
NALISNICK_SVI_STEPS = 10000
NALISNICK_SVI_OPTIONS: dict[str, Any] = {"lr": 0.01, "batch_size": 128}

_HYPERPRIOR_NAMES = {"inverse-nakagami": "inverse-gamma", "half-cauchy": "half-Cauchy"}


@dataclass(frozen=True)
class Block:
    """One grid of a preset (arguments of :func:`~bnn_priors.suite.config.expand_grid`)."""

    datasets: tuple[str, ...]
    noise: tuple[str, ...]
    structure: tuple[str, ...]
    arch: tuple[str, ...]
    inference: tuple[str, ...]
    budget: int
    splits: str = "all"
    options: Mapping[str, Any] = field(default_factory=dict)
    prior: Mapping[str, Any] = field(default_factory=dict)
    #: Table label per (noise, structure); missing pairs get the derived label.
    labels: Mapping[tuple[str, str], str] = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    blocks: tuple[Block, ...]


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        "quick",
        "diabetes, splits 0-4: MC dropout, SVI, SVI-EM and variational dropout with short training",
        (
            Block(QUICK_DATASETS, ("bernoulli",), ("ard",), ("mlp-1x50",), ("mc-dropout",),
                  QUICK_MC_DROPOUT_EPOCHS, QUICK_SPLITS, prior={"p": QUICK_DROPOUT_P}),
            Block(QUICK_DATASETS, ("half-cauchy",), ("ard",), ("mlp-1x50",), ("svi",),
                  QUICK_SVI_STEPS, QUICK_SPLITS, options={"lr": QUICK_SVI_LR}),
            Block(QUICK_DATASETS, ("inverse-nakagami",), ("ard-add",), ("resnet-2x50",), ("svi-em",),
                  QUICK_SVI_STEPS, QUICK_SPLITS, options={"lr": QUICK_SVI_LR}),
            Block(QUICK_DATASETS, ("log-uniform",), ("none",), ("mlp-1x50",), ("vd",),
                  QUICK_SVI_STEPS, QUICK_SPLITS, options={"lr": QUICK_SVI_LR}),
        ),
    ),
    "nalisnick2019": Preset(
        "nalisnick2019",
        "Nalisnick et al. 2019: MC dropout on mlp-1x50; ARD/ADD/ARD-ADD resnet-2x50 with inverse-gamma "
        "and half-Cauchy hyper-priors (SVI-EM); 20 splits of seven UCI sets",
        (
            Block(NALISNICK_DATASETS, ("bernoulli",), ("ard",), (NALISNICK_ARCH_DROPOUT,), ("mc-dropout",),
                  NALISNICK_MC_DROPOUT_EPOCHS, NALISNICK_SPLITS, NALISNICK_MC_DROPOUT_OPTIONS,
                  {"p": NALISNICK_MC_DROPOUT_P}, {("bernoulli", "ard"): "MC dropout (mlp-1x50)"}),
            Block(NALISNICK_DATASETS, NALISNICK_HYPERPRIORS, NALISNICK_STRUCTURES, (NALISNICK_ARCH_SHRINKAGE,),
                  ("svi-em",), NALISNICK_SVI_STEPS, NALISNICK_SPLITS, NALISNICK_SVI_OPTIONS,
                  labels={
                      (noise, st): f"{st.upper()} ({_HYPERPRIOR_NAMES[noise]}, SVI-EM, resnet-2x50)"
                      for noise in NALISNICK_HYPERPRIORS for st in NALISNICK_STRUCTURES
                  }),
        ),
    ),
}


def get_preset(name: str) -> Preset:
    key = str(name).strip().lower()
    if key not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    return PRESETS[key]


def preset_configs(
    name: str,
    *,
    datasets=None,
    splits=None,
    noise=None,
    structure=None,
    arch=None,
    inference=None,
    budget: Mapping[str, int] | None = None,
    seeds=0,
    eval_samples: int | None = None,
    options: Mapping[str, Any] | None = None,
    prior: Mapping[str, Any] | None = None,
) -> list[RunConfig]:
    """The runs of a preset, with the given options overriding the preset's values.

    ``budget`` maps a budget unit (``steps``, ``epochs``, ``samples``) or a method
    name to a budget; it overrides the preset's for the blocks it applies to.
    ``options`` and ``prior`` are merged into each block's backend options and
    prior parameters (overriding keys they share).
    """
    from bnn_priors.suite.methods import get_method

    preset = get_preset(name)
    relabel = any(v is not None for v in (noise, structure, arch, inference))
    configs: list[RunConfig] = []
    seen: set[str] = set()
    for block in preset.blocks:
        methods = inference if inference is not None else ",".join(block.inference)
        block_budget: dict[str, int] = {}
        for method in (m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods)):
            m = get_method(method)
            chosen = (budget or {}).get(m.name) or (budget or {}).get(m.budget_unit)
            block_budget[m.name] = int(chosen) if chosen is not None else block.budget
        kwargs: dict[str, Any] = {}
        if eval_samples is not None:
            kwargs["eval_samples"] = eval_samples
        grid = expand_grid(
            datasets if datasets is not None else ",".join(block.datasets),
            splits if splits is not None else block.splits,
            noise if noise is not None else ",".join(block.noise),
            structure if structure is not None else ",".join(block.structure),
            arch if arch is not None else ",".join(block.arch),
            methods,
            budget=block_budget,
            seeds=seeds,
            options={**(block.options if inference is None else {}), **(options or {})},
            prior={**(block.prior if noise is None else {}), **(prior or {})},
            **kwargs,
        )
        for cfg in grid:
            label = None if relabel else block.labels.get((cfg.noise, cfg.structure))
            cfg = replace(cfg, label=label) if label else cfg
            if cfg.hash not in seen:
                seen.add(cfg.hash)
                configs.append(cfg)
    return configs
