"""What a noise model draws its random numbers from: the :class:`RandomSource` protocol.

:meth:`bnn_priors.NoiseModel.sample` turns standard draws (uniform, normal, gamma)
into noise; which generator those draws come from is the caller's business. The
inference backends pass :class:`inference.common.ReplicaRandom`, which keeps one
seeded stream per replica, so that a replica trained inside a batch sees the numbers
it would see trained alone. This protocol is the whole of what a noise model may ask
of such a source; the prior package never imports ``inference``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class RandomSource(Protocol):
    """Standard draws of ``shape`` from each of the source's streams, stacked along a new ``axis``.

    A source with ``R`` streams returns a tensor of ``shape`` with a stream axis of
    length ``R`` inserted at ``axis``.
    """

    @property
    def replicas(self) -> int:
        """The number of streams."""
        ...

    def subset(self, streams: Sequence[int]) -> RandomSource:
        """The listed streams only, as a source whose draws are the numbers those streams give here
        (and advance them here too): for streams whose noise models differ."""
        ...

    def rand(self, shape: Sequence[int], dtype: torch.dtype, axis: int = 0) -> torch.Tensor:
        """Uniform(0, 1) draws."""
        ...

    def rand_streams(self, streams: Sequence[int], shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """Uniform(0, 1) draws of ``shape`` from the listed streams only, shape ``(len(streams), *shape)``:
        the other streams do not move (a sampler that needs more numbers for some streams than for
        others draws them this way, so that each stream's numbers do not depend on its neighbours)."""
        ...

    def randn(self, shape: Sequence[int], dtype: torch.dtype, axis: int = 0) -> torch.Tensor:
        """Standard normal draws."""
        ...

    def standard_gamma(self, shape: Sequence[int], concentration: float, dtype: torch.dtype, axis: int = 0) -> torch.Tensor:
        """Gamma(concentration, rate 1) draws."""
        ...
