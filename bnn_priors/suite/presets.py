"""Named benchmark suites: ``bnn-priors bench --preset NAME``.

A preset is a list of blocks; each block is a grid (the product of its lists)
with its own training budget, options and, optionally, the column label its
runs get in tables. The options of the command line narrow a preset or change
its runs (:func:`preset_configs`):

* ``--datasets`` and ``--splits`` choose the data the preset runs on;
* the grid axes ``--noise``, ``--structure``, ``--arch`` and ``--inference``
  *select* among the preset's configurations, each kept with its options, budget
  and label, so ``--preset nalisnick2019 --datasets yacht --inference map-em``
  reruns exactly the preset's MAP-EM columns of yacht. A value that no
  configuration of the preset has is an error listing what it has;
* a budget (``--steps`` for the SVI methods, ``--epochs`` for MC dropout,
  ``--samples`` for NUTS), ``--option``, ``--prior``, ``--seed``, ``--holdout``
  and ``--eval-samples`` change the runs where they differ from the preset's
  values, and a warning (one line) names each change: those runs are no
  longer the preset's.

``quick``
    diabetes (ships with scikit-learn, nothing to download), splits 0-4, four
    methods with short training: a first look in about 20 seconds on two CPU cores.
``nalisnick2019``
    The UCI experiment of Nalisnick et al. (2019), "Dropout as a Structured
    Shrinkage Prior": MC dropout (Bernoulli noise, ARD structure) on ``mlp-1x50``;
    ARD, ADD and ARD-ADD priors on ``resnet-2x50`` with inverse-gamma (noise
    ``inverse-nakagami``) and half-Cauchy hyper-priors fitted by ``svi-em``, and
    with the inverse-gamma hyper-prior fitted by ``map-em`` (point-estimate
    weights, the paper's EM for the marginal MAP); all 20 splits of boston, concrete, energy, kin8nm, power, wine and yacht
    (``--datasets`` adds naval and protein, which the paper leaves out).
``gal2016``
    The grid search of Gal & Ghahramani (2016), "Dropout as a Bayesian
    Approximation", as in the reference code (``DropoutUncertaintyExps``): for
    each of the nine UCI sets, MC dropout (Bernoulli noise, ARD structure) on
    ``mlp-1x{n_hidden}`` (the set's ``n_hidden.txt``: 50, protein 100), one run
    per (dropout rate p, precision tau) of the set's ``dropout_rates.txt`` x
    ``tau_values.txt`` on every split, hold-out 0.2 (train on the first 80% of the
    training split, validate on the rest), ``n_epochs.txt`` x
    :data:`GAL_EPOCH_MULTIPLIER` epochs, batch 128, Adam lr 1e-3, length-scale
    1e-2 and Gal's weight decay and precision (option ``gal_tau``, see
    :mod:`bnn_priors.suite.protocols`); test metrics from
    :data:`GAL_EVAL_SAMPLES` forward passes. Its table is the protocol's
    (``bnn-priors table --protocol gal2016``): per split the (p, tau) with the best
    validation log-likelihood, reported on the test split. Building it reads each
    data set's grid files (``--data-dir``).
``gal2016-2layer``
    Gal's two-layer runs, the "2 layers results" table of the DropoutUncertaintyExps
    README at commit :data:`GAL2_COMMIT` (the Dropout column of Nalisnick et al.'s
    Table 2): ``<set>/net/experiment_2_layers.py`` trains MC dropout (Bernoulli
    noise, ARD structure: dropout before every dense layer, the input included) on
    ``mlp-2x{n_hidden}`` with the set's one dropout rate p, precision tau and
    length-scale hard-coded in ``<set>/net/net/net.py`` (:data:`GAL2_SETTINGS`; tau
    came from Bayesian optimisation on validation data of Gal's), no grid search
    and no hold-out, ``n_epochs`` x :data:`GAL2_EPOCH_MULTIPLIER` epochs, batch 128,
    Adam lr 1e-3, weight decay ``l^2 (1 - p) / (2 N tau)`` on the weights (option
    ``gal_tau``), test metrics from :data:`GAL2_EVAL_SAMPLES` forward passes, all 20
    standard splits. Its reference is the two-layer table (``bnn-priors table
    --reference gal2016-2layer``).

``nalisnick2019-released``
    Nalisnick et al.'s released training script (github enalisnick/dropout_icml2019,
    ``train_bnn.py`` with ``models/bnn.py`` and ``models/utils.py``) with its own
    settings, on the standard 20 splits of boston, concrete, energy, kin8nm, power,
    wine and yacht: ARD, ADD and ARD-ADD ``resnet-2x50`` networks (``h1 = relu(x W0 +
    b0)``, ``h2 = h1 + relu(h1 W1 + b1)``, ``out = h2 W2 + b2``) with an inverse-gamma(3, 3)
    hyper-prior on the variances (noise ``inverse-nakagami``, shape 3, spread 1), fitted
    by ``svi`` with :data:`NALISNICK_RELEASED_OPTIONS`. Every setting of that code that
    can move the numbers, quirks included:

    * mean-field Gaussian ``q(w)`` with the variance ``softplus(rho)`` as the parameter;
      the prior scales are not variational: the mode of their posterior given q's
      second moments is recomputed in closed form at every step *inside* the loss, so
      gradients flow through them (``scale_updates="in-loss"``), the mode taken in the
      variance, not in log-variance (``scale_mode="variance"``:
      ``v = (2b + sum E[w^2]) / (2a + J + 2)``);
    * ADD and ARD-ADD scales on the hidden-to-hidden matrix only, ARD on the input and
      output matrices (``outer_structure="ard"``);
    * ARD-ADD's update (``ard_add_update="nalisnick2019"``): the layer scale of the unit
      update is held at 1 (``self.taus`` is never updated), and the layer scale divides
      the moments by the unit scales' standard deviations instead of their variances;
    * a fixed likelihood precision 20 on standardized targets (``likelihood_precision``);
    * the loss is the mean log-likelihood per point minus the mean KL per weight
      (``kl_weight="per-weight"``: the KL weighted by N / P against the ELBO, P the
      number of weights, biases not counted);
    * biases are plain parameters without a prior (``bias="point"``);
    * initialisation: weight means U(-0.05, 0.05), rho U(-10, -6.5), biases 0.1
      (``init="uniform"``);
    * the sampler (``sign_flip=(-1, 3)``): no Gaussian draw at all; each pre-activation is
      ``h mu + b + ((h * s) @ sqrt(var)) * r`` with ``s`` and ``r`` drawn per point and
      unit as ``tf.nn.dropout(ones, 0.5) * 2 - 1``, which is 3 or -1 (dropout scales the
      kept ones by 2), not +-1: the effective weights have mean ``mu + sigma`` and variance
      ``24 sigma^2``; the same sampler makes the test predictions;
    * Adam lr 1e-3, 10 draws per step, batches of 32 from a fresh shuffle every epoch with
      the last partial batch dropped (``batches="epochs"``, ``drop_last=True``), 4500
      epochs: ``4500 * floor(N / 32)`` steps (:data:`NALISNICK_RELEASED_EPOCHS`);
    * test metrics from 500 draws (``get_test_metrics(500, ...)``) of the final
      parameters (its best-ELBO bookkeeping only marks the log).

    Not reproduced: its splits (unseeded random 90/10 splits of its own: the standard
    splits are used), its unseeded initialisation and shuffling (seeded here), the
    ``eps=1e-8`` inside the logarithms of its KL, TensorFlow 1's Adam (its epsilon is added
    to the uncorrected ``sqrt(v)``, torch's to the bias-corrected one), and its test log-likelihood (computed
    with a precision of 0.75 in original units; ours is the model's, 20 on the
    standardized targets). Its printed "RMSE" is the sample-MAE (``--metric
    sample-mae``) and its ``+-`` a standard deviation over splits. The paper's
    hyper-prior choices beyond the script's inverse-gamma(3, 3) are not part of it.

Every training setting of the presets is a named constant below.

Imports: :mod:`bnn_priors.errors`, :mod:`bnn_priors.structures` and, of the suite, :mod:`~bnn_priors.suite.config`,
:mod:`~bnn_priors.suite.methods`, :mod:`~bnn_priors.suite.data_options` (Gal's
length-scale) and :mod:`~bnn_priors.suite.loading` (a built preset reads its data sets).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bnn_priors.errors import InvalidParameterError, lookup
from bnn_priors.structures import check_structure
from bnn_priors.suite.config import (
    DEFAULT_EVAL_SAMPLES,
    RunConfig,
    check_arch,
    check_dataset,
    check_inference,
    check_noise,
    expand_grid,
    parse_list,
)
from bnn_priors.suite.data_options import GAL_LENGTH_SCALE
from bnn_priors.suite.loading import data_info, load
from bnn_priors.suite.methods import BUDGET_UNITS

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
#: Chosen on validation data only (benchmarks/validation_study.py: boston and yacht, splits 0-4,
#: a random 20% of each training split held out): full-batch 3000 steps at lr 0.01 was as good as
#: 10000 steps with batches of 128 or full batches (within one standard error) at a third of the cost.
NALISNICK_SVI_STEPS = 3000
NALISNICK_SVI_OPTIONS: dict[str, Any] = {"lr": 0.01}
#: MAP-EM only with the inverse-gamma hyper-prior: its closed-form step is EM for the marginal (Student-t)
#: MAP, whose scales have a floor; with half-Cauchy scales the step is a joint mode of weights and scales,
#: unbounded as a group of weights goes to zero, and on validation data
#: (benchmarks/validation_study.py, boston/yacht/concrete splits 0-4) it shrank the networks too far
#: (RMSE 5.3 / 1.1 / 7.2 against 3.6 / 0.65 / 4.8). The budget is the SVI-EM one: on validation data
#: no alternative (1000 or 10000 full-batch steps, 10000 in batches of 128, inverse-Nakagami shape 1 or
#: 5) was better across the five small sets; yacht preferred longer training and wine ARD shorter.
NALISNICK_MAP_HYPERPRIORS = ("inverse-nakagami",)
NALISNICK_MAP_STEPS = 3000
NALISNICK_MAP_OPTIONS: dict[str, Any] = {"lr": 0.01}

# --------------------------------------------------------------- gal2016 preset
GAL_DATASETS = ("boston", "concrete", "energy", "kin8nm", "naval", "power", "protein", "wine", "yacht")
GAL_SPLITS = "all"
#: Epochs = the data set's ``n_epochs.txt`` value times this: 500 is the default of the reference
#: script's ``--epochx`` option (``experiment.py`` in DropoutUncertaintyExps), which its README
#: pairs with the updated, longer-trained results. ``--epochs`` sets the epochs directly (e.g. 400).
GAL_EPOCH_MULTIPLIER = 500
#: The validation part: the last 20% of each training split (Gal's ``int(0.8 * n)`` train rows).
GAL_HOLDOUT = 0.2
#: Forward passes for the validation and test metrics (Gal's code uses T = 10000).
GAL_EVAL_SAMPLES = 1000
GAL_BATCH_SIZE = 128
GAL_LR = 1e-3
GAL_OPTIONS: dict[str, Any] = {"batch_size": GAL_BATCH_SIZE, "lr": GAL_LR, "length_scale": GAL_LENGTH_SCALE}

# ------------------------------------------------- nalisnick2019-released preset
NALISNICK_RELEASED_DATASETS = NALISNICK_DATASETS
#: ``train_bnn.py``'s defaults: ``nEpochs`` 4500 and ``batchSize`` 32 (``int(N_train / batchSize)`` batches).
NALISNICK_RELEASED_EPOCHS = 4500
NALISNICK_RELEASED_BATCH = 32
#: ``setup_and_train_script.sh``: ``--hyperprior_dist inv_gamma --hyperprior_param1 3. --hyperprior_param2 3.``:
#: ``lambda^2 ~ InverseGamma(3, 3)``, i.e. inverse-Nakagami noise with shape 3 and spread 1.
NALISNICK_RELEASED_PRIOR: dict[str, Any] = {"shape": 3.0, "spread": 1.0}
#: ``get_test_metrics(500, ...)`` in ``train_bnn.py``.
NALISNICK_RELEASED_EVAL_SAMPLES = 500
#: The SVI and model options of the released code (see the module docstring).
NALISNICK_RELEASED_OPTIONS: dict[str, Any] = {
    "lr": 1e-3, "batch_size": NALISNICK_RELEASED_BATCH, "batches": "epochs", "drop_last": True,
    "num_particles": 10, "scale_updates": "in-loss", "scale_mode": "variance", "ard_add_update": "nalisnick2019",
    "kl_weight": "per-weight", "bias": "point", "init": "uniform", "variance_param": "softplus",
    "sign_flip": [-1.0, 3.0], "outer_structure": "ard", "likelihood_precision": 20.0,
}


# -------------------------------------------------------- gal2016-2layer preset
#: The commit of Gal's DropoutUncertaintyExps whose README holds the "2 layers results" table
#: (the Dropout column of Nalisnick et al. 2019) and whose ``experiment_2_layers.py`` made it.
GAL2_COMMIT = "a6259f1"


@dataclass(frozen=True)
class Gal2Setting:
    """One data set's settings of ``<set>/net/experiment_2_layers.py`` at :data:`GAL2_COMMIT`: the dropout
    rate ``dropout``, the precision ``tau`` ("obtained from BO") and the prior ``lengthscale`` hard-coded in
    ``<set>/net/net/net.py``, and ``<set>/data/n_hidden.txt`` and ``n_epochs.txt``."""

    p: float
    tau: float
    length_scale: float
    n_hidden: int
    n_epochs: int


#: Read from the files at :data:`GAL2_COMMIT` (net.py lines ``dropout = ...``, ``tau = ...``,
#: ``lengthscale = ...``). The length-scale is 1e-2 except yacht (1e-1) and naval (1e0).
GAL2_SETTINGS: dict[str, Gal2Setting] = {
    "boston": Gal2Setting(0.05, 0.159707652696, 1e-2, 50, 40),
    "concrete": Gal2Setting(0.01, 0.0557319157756, 1e-2, 50, 40),
    "energy": Gal2Setting(0.05, 0.427114830213, 1e-2, 50, 40),
    "kin8nm": Gal2Setting(0.05, 192.482910156, 1e-2, 50, 40),
    "naval": Gal2Setting(0.05, 42173.5152106, 1e0, 50, 40),
    "power": Gal2Setting(0.005, 0.0871109017617, 1e-2, 50, 40),
    "protein": Gal2Setting(0.005, 0.0644419184588, 1e-2, 100, 20),
    "wine": Gal2Setting(0.05, 2.95833720839, 1e-2, 50, 40),
    "yacht": Gal2Setting(0.01, 0.541869562034, 1e-1, 50, 40),
}
#: ``experiment_2_layers.py`` trains ``int(n_epochs * 500)`` epochs: ``net.net(..., [n_hidden, n_hidden],
#: n_epochs=int(n_epochs*500))``.
GAL2_EPOCH_MULTIPLIER = 500
#: Forward passes for the test metrics: ``T = 10000`` in ``net.py``'s ``predict``.
GAL2_EVAL_SAMPLES = 10000

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
    #: Validation fraction of every run (None: no hold-out).
    holdout: float | None = None
    #: Posterior samples for the metrics (None: the default).
    eval_samples: int | None = None


#: ``(data set names, data_dir) -> blocks``, for presets built from the data sets' own files.
BlockBuilder = Callable[[Sequence[str], "str | None"], tuple[Block, ...]]


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    blocks: tuple[Block, ...] = ()
    #: Builds the blocks from the data sets' files instead (reads them).
    build: BlockBuilder | None = None
    #: The data sets of a built preset (``--datasets`` overrides).
    datasets: tuple[str, ...] = ()
    #: The selection protocol of its table (:mod:`bnn_priors.suite.protocols`), if any.
    protocol: str | None = None

    def make_blocks(self, datasets: Sequence[str] | None = None, data_dir: str | None = None) -> tuple[Block, ...]:
        """The blocks; a built preset reads the files of ``datasets`` (default: its own)."""
        if self.build is None:
            return self.blocks
        return self.build(tuple(datasets) if datasets is not None else self.datasets, data_dir)


def gal_blocks(datasets: Sequence[str], data_dir: str | None = None) -> tuple[Block, ...]:
    """One block per (data set, p, tau) of each data set's grid (reads ``n_hidden``, ``n_epochs``,
    ``dropout_rates`` and ``tau_values`` of each set)."""
    blocks = []
    for name in (check_dataset(d) for d in datasets):
        ds = load(name, data_dir)
        arch = f"mlp-1x{int(ds.n_hidden)}"
        epochs = int(ds.n_epochs) * GAL_EPOCH_MULTIPLIER
        for p in (float(v) for v in ds.dropout_rates):
            for tau in (float(v) for v in ds.tau_values):
                blocks.append(Block(
                    (name,), ("bernoulli",), ("ard",), (arch,), ("mc-dropout",), epochs, GAL_SPLITS,
                    {**GAL_OPTIONS, "gal_tau": tau}, {"p": p},
                    {("bernoulli", "ard"): f"MC dropout, Gal grid (p={p:g}, tau={tau:g}, {arch})"},
                    holdout=GAL_HOLDOUT, eval_samples=GAL_EVAL_SAMPLES,
                ))
    return tuple(blocks)


def gal2_blocks(datasets: Sequence[str], data_dir: str | None = None) -> tuple[Block, ...]:
    """One block per data set: MC dropout on ``mlp-2x{n_hidden}`` with the set's own p, tau and length-scale
    (:data:`GAL2_SETTINGS`), every split, no hold-out (reads nothing: the settings are constants)."""
    blocks = []
    for name in (check_dataset(d) for d in datasets):
        if name not in GAL2_SETTINGS:
            raise InvalidParameterError(
                f"preset gal2016-2layer has no settings for data set {name}; it has: {', '.join(GAL2_SETTINGS)}"
            )
        s = GAL2_SETTINGS[name]
        arch = f"mlp-2x{s.n_hidden}"
        options = {"batch_size": GAL_BATCH_SIZE, "lr": GAL_LR, "length_scale": s.length_scale, "gal_tau": s.tau}
        blocks.append(Block(
            (name,), ("bernoulli",), ("ard",), (arch,), ("mc-dropout",), s.n_epochs * GAL2_EPOCH_MULTIPLIER,
            GAL_SPLITS, options, {"p": s.p},
            {("bernoulli", "ard"): f"MC dropout, Gal 2 layers (p={s.p:g}, tau={s.tau:.4g}, {arch})"},
            eval_samples=GAL2_EVAL_SAMPLES,
        ))
    return tuple(blocks)


def nalisnick_released_blocks(datasets: Sequence[str], data_dir: str | None = None) -> tuple[Block, ...]:
    """One block per data set: ARD, ADD and ARD-ADD with the released code's options, trained
    ``NALISNICK_RELEASED_EPOCHS * floor(N / 32)`` steps (reads each set's split sizes)."""
    blocks = []
    for name in (check_dataset(d) for d in datasets):
        sizes = {train for train, _ in data_info(name, data_dir).sizes}
        if len(sizes) != 1:
            raise InvalidParameterError(
                f"preset nalisnick2019-released counts epochs in steps and needs training splits of one size; "
                f"{name}'s have sizes {sorted(sizes)}"
            )
        steps = NALISNICK_RELEASED_EPOCHS * (sizes.pop() // NALISNICK_RELEASED_BATCH)
        blocks.append(Block(
            (name,), ("inverse-nakagami",), NALISNICK_STRUCTURES, (NALISNICK_ARCH_SHRINKAGE,), ("svi",), steps,
            NALISNICK_SPLITS, NALISNICK_RELEASED_OPTIONS, NALISNICK_RELEASED_PRIOR,
            {("inverse-nakagami", st): f"{st.upper()} (released code: inverse-gamma(3, 3), resnet-2x50, "
             f"{NALISNICK_RELEASED_EPOCHS} epochs)" for st in NALISNICK_STRUCTURES},
            eval_samples=NALISNICK_RELEASED_EVAL_SAMPLES,
        ))
    return tuple(blocks)


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
            Block(NALISNICK_DATASETS, NALISNICK_MAP_HYPERPRIORS, NALISNICK_STRUCTURES, (NALISNICK_ARCH_SHRINKAGE,),
                  ("map-em",), NALISNICK_MAP_STEPS, NALISNICK_SPLITS, NALISNICK_MAP_OPTIONS,
                  labels={
                      (noise, st): f"{st.upper()} ({_HYPERPRIOR_NAMES[noise]}, MAP-EM, resnet-2x50)"
                      for noise in NALISNICK_MAP_HYPERPRIORS for st in NALISNICK_STRUCTURES
                  }),
        ),
    ),
    "gal2016": Preset(
        "gal2016",
        "Gal & Ghahramani 2016: MC dropout grid search over each UCI set's (dropout rate, tau) grid, chosen "
        "per split on a 20% hold-out of the training split, reported on the test split",
        build=gal_blocks,
        datasets=GAL_DATASETS,
        protocol="gal2016",
    ),
    "nalisnick2019-released": Preset(
        "nalisnick2019-released",
        "Nalisnick et al.'s released training script (enalisnick/dropout_icml2019) with its own settings and "
        "quirks: ARD/ADD/ARD-ADD resnet-2x50, inverse-gamma(3, 3), scales in closed form inside the loss, "
        "4500 epochs; the standard 20 splits of seven UCI sets",
        build=nalisnick_released_blocks,
        datasets=NALISNICK_RELEASED_DATASETS,
    ),
    "gal2016-2layer": Preset(
        "gal2016-2layer",
        "Gal's two-layer MC dropout runs (DropoutUncertaintyExps a6259f1, experiment_2_layers.py): each UCI "
        "set's own dropout rate, tau and length-scale, mlp-2x50 (protein 2x100), no grid search, 20 splits",
        build=gal2_blocks,
        datasets=tuple(GAL2_SETTINGS),
    ),
}


def get_preset(name: str) -> Preset:
    return PRESETS[lookup("preset", name, PRESETS)]


#: The grid axes by which a preset is narrowed, with the check that spells each value as the configs do.
SELECTORS: dict[str, Callable[[str], str]] = {
    "noise": check_noise,
    "structure": check_structure,
    "arch": check_arch,
    "inference": check_inference,
}
#: The seed of every preset run.
PRESET_SEED = 0
_UNSET = object()


def _selection(axes: Mapping[str, Any]) -> dict[str, list[str]]:
    """The values asked for on each narrowed axis, spelled as the configs spell them (names checked)."""
    return {axis: [SELECTORS[axis](v) for v in parse_list(value)] for axis, value in axes.items() if value is not None}


def _check_selection(name: str, wanted: Mapping[str, list[str]], offered: Sequence[RunConfig]) -> None:
    """Refuse a narrowing value that no configuration of the preset has, and a narrowing that keeps nothing."""
    for axis, values in wanted.items():
        have = list(dict.fromkeys(getattr(c, axis) for c in offered))
        missing = [v for v in values if v not in have]
        if missing:
            raise InvalidParameterError(
                f"preset {name} has no run with {axis} {', '.join(missing)}; its {axis} values: {', '.join(have)}"
            )
    if wanted and not any(all(getattr(c, axis) in values for axis, values in wanted.items()) for c in offered):
        asked = " and ".join(f"{axis} {','.join(values)}" for axis, values in wanted.items())
        combos = dict.fromkeys(f"{c.noise}/{c.structure} {c.arch} {c.inference}" for c in offered)
        raise InvalidParameterError(f"preset {name} has no run with {asked}; its runs: {', '.join(combos)}")


def _changes(cfg: RunConfig, own: RunConfig) -> list[tuple[str, str]]:
    """What sets ``cfg`` apart from the preset's own configuration ``own``: ``(setting, preset's value)`` pairs."""
    out = []
    if cfg.budget != own.budget:
        out.append((f"{cfg.budget_unit} {cfg.budget}", str(own.budget)))
    for kind in ("options", "prior"):
        mine, theirs = getattr(cfg, kind), getattr(own, kind)
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key, _UNSET) != theirs.get(key, _UNSET):
                out.append((f"{kind[:-1] if kind == 'options' else kind} {key}={mine.get(key, 'unset')}",
                            f"{key}={theirs.get(key, 'unset')}"))
    if cfg.seed != own.seed:
        out.append((f"seed {cfg.seed}", str(own.seed)))
    if cfg.holdout != own.holdout:
        out.append((f"holdout {cfg.holdout}", str(own.holdout)))
    if cfg.eval_samples != own.eval_samples:
        out.append((f"eval_samples {cfg.eval_samples}", str(own.eval_samples)))
    return out


def describe_changes(name: str, changes: Mapping[tuple[str, str], Sequence[str]]) -> str:
    """One line naming each change to a preset's runs: the new setting, the methods it touches and
    the preset's value for them."""
    parts = [f"{setting} (the preset's {', '.join(methods)}: {theirs})" for (setting, theirs), methods in changes.items()]
    return f"these settings change runs of preset {name}, which are then not the preset's: {'; '.join(parts)}"


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
    seeds=PRESET_SEED,
    eval_samples: int | None = None,
    options: Mapping[str, Any] | None = None,
    prior: Mapping[str, Any] | None = None,
    holdout: float | None = None,
    data_dir: str | None = None,
) -> list[RunConfig]:
    """The runs of a preset on ``datasets`` and ``splits`` (default: the preset's), narrowed and changed.

    ``noise``, ``structure``, ``arch`` and ``inference`` (lists) select the
    preset's configurations whose value is among them; the selected ones keep
    their options, budget and label. A value that no configuration of the preset
    has (on these data sets) raises :class:`~bnn_priors.InvalidParameterError`
    listing what it has, and so does a selection that keeps no configuration.

    The other arguments change the runs: ``budget`` maps a budget unit (``steps``,
    ``epochs``, ``samples``) or a method name to a budget; ``options`` and ``prior``
    are merged into each block's backend options and prior parameters
    (overriding keys they share); ``seeds``, ``holdout`` and ``eval_samples``
    replace the preset's values. Where a change makes a run other than the
    preset's (a value that differs from the preset's), a ``UserWarning`` names
    each such change in one line. A preset built from the data sets' files
    (``gal2016``) reads them from ``data_dir`` (else the usual places, see
    :func:`bnn_priors.data.load_dataset`).
    """
    preset = get_preset(name)
    wanted = _selection({"noise": noise, "structure": structure, "arch": arch, "inference": inference})
    given = {key: value for key, value in (budget or {}).items() if value is not None}
    offered: list[RunConfig] = []
    configs: list[RunConfig] = []
    seen: set[str] = set()
    changes: dict[tuple[str, str], list[str]] = {}
    blocks = preset.make_blocks(parse_list(datasets) if preset.build is not None else None, data_dir)
    for block in blocks:
        grid_datasets = datasets if datasets is not None and preset.build is None else ",".join(block.datasets)
        grid_splits = splits if splits is not None else block.splits
        axes = (",".join(block.noise), ",".join(block.structure), ",".join(block.arch), ",".join(block.inference))
        own_samples = block.eval_samples if block.eval_samples is not None else DEFAULT_EVAL_SAMPLES
        # the block's budget in every unit, under the caller's (by method name or by unit)
        grid = expand_grid(
            grid_datasets, grid_splits, *axes,
            budget={**dict.fromkeys(BUDGET_UNITS, block.budget), **given},
            seeds=seeds,
            options={**block.options, **(options or {})},
            prior={**block.prior, **(prior or {})},
            holdout=holdout if holdout is not None else block.holdout,
            eval_samples=eval_samples if eval_samples is not None else own_samples,
        )
        for cfg in grid:
            offered.append(cfg)
            if not all(getattr(cfg, axis) in values for axis, values in wanted.items()):
                continue
            own = replace(cfg, budget=block.budget, seed=PRESET_SEED, options=dict(block.options),
                          prior=dict(block.prior), holdout=block.holdout, eval_samples=own_samples)
            for change in _changes(cfg, own):
                methods = changes.setdefault(change, [])
                if cfg.inference not in methods:
                    methods.append(cfg.inference)
            label = block.labels.get((cfg.noise, cfg.structure))
            cfg = replace(cfg, label=label) if label else cfg
            if cfg.hash not in seen:
                seen.add(cfg.hash)
                configs.append(cfg)
    _check_selection(preset.name, wanted, offered)
    if changes:
        warnings.warn(describe_changes(preset.name, changes), UserWarning, stacklevel=2)
    return configs
