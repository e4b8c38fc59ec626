"""The inference methods the benchmark runner knows: a backend of :data:`inference.BACKENDS` plus defaults.

Imports: :mod:`bnn_priors.errors` and :mod:`inference` (the backends' registry); nothing else of the suite.

========== ========== ============ =========================================
name       backend    budget unit  defaults
========== ========== ============ =========================================
svi        svi        steps        mean-field guide, local reparameterization
svi-em     svi        steps        as ``svi``, scales by closed-form EM
                                   updates (``scale_updates="em"``)
map-em     svi        steps        ``guide="map"``: point-estimate weights,
                                   scales by the same closed-form updates
                                   (Nalisnick et al. 2019's EM for the
                                   marginal MAP with inverse-gamma scales)
vd         svi        steps        ``guide="variational-dropout"``
nuts       nuts       samples      warm-up iterations = the number of samples
mc-dropout mc-dropout epochs       the backend's (batch 128, Adam 1e-3)
========== ========== ============ =========================================

What the runner needs of a backend, the backend class declares (see
:mod:`inference`): ``options`` (every keyword with its default),
``budget_option`` and ``budget_unit`` (the option a training budget sets and what
it counts) and ``replica_options`` (options that take one value per replica). A
method puts its own defaults on top and may set more options to the budget
(``budget_also``). So a new backend needs its class in ``inference.BACKENDS``
and a line here, nothing else of the suite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bnn_priors.errors import InvalidParameterError, lookup
from inference import BACKENDS

#: Options the runner sets itself: a config's ``options`` may not hold them.
RESERVED_OPTIONS = ("seed", "device", "progress", "threads")


@dataclass(frozen=True)
class Method:
    """An inference method: a backend (a key of :data:`inference.BACKENDS`), its default budget and options."""

    name: str
    label: str
    backend: str
    default_budget: int
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    #: Options set to the budget as well unless a config gives them (``nuts``: as many warm-up iterations as draws).
    budget_also: tuple[str, ...] = ()

    @property
    def backend_class(self) -> type:
        return BACKENDS[self.backend]

    @property
    def budget_unit(self) -> str:
        """What the config's budget counts: ``steps``, ``epochs`` or ``samples``."""
        return self.backend_class.budget_unit

    @property
    def budget_arg(self) -> str:
        """The backend's keyword argument for the budget."""
        return self.backend_class.budget_option

    def default_options(self) -> dict[str, Any]:
        """The backend's declared defaults with this method's own on top."""
        return {**self.backend_class.options, **self.defaults}

    def backend_kwargs(self, budget: int, options: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of the backend for this budget and these options (checked)."""
        reserved = sorted(set(options) & {*RESERVED_OPTIONS, self.budget_arg})
        if reserved:
            raise InvalidParameterError(
                f"options {', '.join(reserved)} of {self.name} are set by the runner "
                f"(use the run's seed, --device and the {self.budget_unit} budget instead)"
            )
        kwargs = {**self.defaults, **options, self.budget_arg: int(budget)}
        kwargs.update({name: int(budget) for name in self.budget_also if name not in options})
        declared = self.backend_class.options
        unknown = sorted(set(kwargs) - set(declared))
        if unknown:
            valid = [k for k in declared if k != self.budget_arg]
            raise InvalidParameterError(
                f"unknown option {', '.join(map(repr, unknown))} for inference method {self.name!r}; "
                f"its options are: {', '.join(valid)}"
            )
        return kwargs

    def make_backend(self, budget: int, options: Mapping[str, Any], seed, device: str = "cpu", progress: bool = False,
                     threads: int | None = 1):
        """An instance of the backend, ready to ``fit`` (``threads``: torch threads of its fit)."""
        kwargs = self.backend_kwargs(budget, options)
        try:
            return self.backend_class(**kwargs, seed=seed, device=device, progress=progress, threads=threads)
        except TypeError as exc:  # a wrongly typed option the backend did not check
            raise InvalidParameterError(f"invalid options for inference method {self.name!r}: {exc}") from None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "svi", "SVI", "svi", 2000, {"guide": "mean-field", "local_reparam": True},
            "mean-field variational inference with the local reparameterization trick",
        ),
        Method(
            "svi-em", "SVI-EM", "svi", 2000, {"guide": "mean-field", "local_reparam": True, "scale_updates": "em"},
            "mean-field SVI on the weights, scales by closed-form EM (type-II MAP) updates",
        ),
        Method(
            "map-em", "MAP-EM", "svi", 2000, {"guide": "map", "scale_updates": "em"},
            "point-estimate weights and closed-form scale updates: with inverse-gamma variances, EM for the marginal MAP",
        ),
        Method(
            "vd", "VD", "svi", 2000, {"guide": "variational-dropout", "local_reparam": True},
            "variational dropout: q(w) = N(theta, alpha theta^2) (Kingma et al. 2015)",
        ),
        Method(
            "nuts", "NUTS", "nuts", 200, {}, "Hamiltonian Monte Carlo with the no-U-turn sampler",
            budget_also=("warmup",),
        ),
        Method(
            "mc-dropout", "MC dropout", "mc-dropout", 40, {},
            "training with multiplicative noise drawn from the prior (Gal & Ghahramani 2016)",
        ),
    )
}

#: The budget units of the methods, each once (``--steps``, ``--samples``, ``--epochs`` on the command line).
BUDGET_UNITS = tuple(dict.fromkeys(m.budget_unit for m in METHODS.values()))


def get_method(name: str) -> Method:
    return METHODS[lookup("inference method", name, METHODS)]


def methods_counting(unit: str) -> list[str]:
    """The methods whose budget is in ``unit``, in registry order."""
    return [m.name for m in METHODS.values() if m.budget_unit == unit]
