"""Random draws taken before a compiled function and handed to it: record once, replay inside.

``torch.compile`` cannot trace the per-replica generators of
:class:`inference.common.ReplicaRandom` (each is a Python-level loop of generator calls),
so a compiled objective takes its random numbers as inputs. Which numbers an objective
draws (the methods of :class:`bnn_priors.random_source.RandomSource`, with their shapes,
in order) depends on its code and its input shapes, not on the values it computes; so:

* :class:`RecordingRandom` runs the objective once eagerly around the real source: each
  draw goes through to the source and is recorded as a :class:`Draw`, giving the
  objective's :class:`DrawPlan`;
* :meth:`DrawPlan.draw` makes those same calls on the source, in the same order, before
  each compiled call: the numbers are those the eager objective would draw, so the
  random streams, and a replica's numbers alone or in a batch, stay as they are;
* :class:`ReplayRandom` is the source the objective sees inside the compiled function:
  it hands out the drawn tensors in order and raises :class:`ReplayMismatch` when the
  objective asks for a draw other than the plan's.

Imports: torch only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

#: The draws of :class:`bnn_priors.random_source.RandomSource` and :class:`inference.common.ReplicaRandom`'s
#: ``bits``; other attributes of a source are not draws.
DRAW_METHODS = ("rand", "randn", "standard_gamma", "rand_streams", "bits")


class ReplayMismatch(RuntimeError):
    """An objective asked a :class:`ReplayRandom` for other draws than its plan's."""


@dataclass(frozen=True)
class Draw:
    """One call of a source's draw method: ``getattr(source, method)(*args, **dict(kwargs))``, as the
    objective made it (shapes as tuples, keyword arguments as sorted pairs)."""

    method: str
    args: tuple
    kwargs: tuple = ()

    @classmethod
    def of(cls, method: str, args: tuple, kwargs: dict) -> Draw:
        def norm(a):
            return tuple(a) if isinstance(a, (list, tuple, torch.Size)) else a
        return cls(method, tuple(norm(a) for a in args), tuple(sorted((k, norm(v)) for k, v in kwargs.items())))

    def call(self, source) -> torch.Tensor:
        return getattr(source, self.method)(*self.args, **dict(self.kwargs))

    def __str__(self) -> str:
        given = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        return f"{self.method}({', '.join(given)})"


@dataclass(frozen=True)
class DrawPlan:
    """The draws of one objective for one set of input shapes, in order."""

    draws: tuple[Draw, ...]

    def draw(self, source) -> list[torch.Tensor]:
        """Make the plan's calls on ``source`` in order: the numbers the recorded objective would draw."""
        return [d.call(source) for d in self.draws]


class RecordingRandom:
    """``source`` whose draws are recorded (:attr:`plan`, and copies of the tensors drawn in
    :attr:`tensors`, safe from an objective that changes its draws in place) as they pass through;
    every other attribute (``replicas``, ``device``, ...) is the source's. A method that hands out
    another source (``subset``) is refused: its draws would escape the record."""

    def __init__(self, source):
        self._source = source
        self._draws: list[Draw] = []
        self.tensors: list[torch.Tensor] = []

    @property
    def plan(self) -> DrawPlan:
        return DrawPlan(tuple(self._draws))

    def __getattr__(self, name: str) -> Any:
        if name == "subset":
            raise ReplayMismatch("a recorded random source cannot hand out a subset of its streams")
        value = getattr(self._source, name)
        if name not in DRAW_METHODS:
            return value

        def record(*args, **kwargs):
            call = Draw.of(name, args, kwargs)
            self._draws.append(call)
            out = call.call(self._source)
            self.tensors.append(out.clone())
            return out

        return record


class ReplayRandom:
    """The tensors ``draws`` of ``plan``, handed out in order to an objective that makes the plan's
    calls; every other attribute is ``source``'s. :meth:`finish` checks that every draw was taken."""

    def __init__(self, source, plan: DrawPlan, draws: Sequence[torch.Tensor]):
        if len(draws) != len(plan.draws):
            raise ReplayMismatch(f"the plan has {len(plan.draws)} draws and {len(draws)} tensors were given")
        self._source = source
        self._plan = plan
        self._tensors = list(draws)
        self._next = 0

    def __getattr__(self, name: str) -> Any:
        if name == "subset":
            raise ReplayMismatch("a replayed random source cannot hand out a subset of its streams")
        if name not in DRAW_METHODS:
            return getattr(self._source, name)

        def replay(*args, **kwargs):
            call = Draw.of(name, args, kwargs)
            i = self._next
            if i >= len(self._plan.draws) or self._plan.draws[i] != call:
                planned = str(self._plan.draws[i]) if i < len(self._plan.draws) else "no more draws"
                raise ReplayMismatch(f"draw {i} of the objective is {call}, and the plan has {planned}")
            self._next = i + 1
            return self._tensors[i]

        return replay

    def finish(self) -> None:
        if self._next != len(self._plan.draws):
            raise ReplayMismatch(f"the objective took {self._next} of the plan's {len(self._plan.draws)} draws")
