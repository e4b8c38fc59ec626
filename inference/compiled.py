"""``torch.compile`` for the backends: a code object per fit, and a check against eager code.

Compiled code rounds differently from eager code (inductor fuses and reorders), and a
machine may lack what compiling needs (a C++ compiler for the CPU). So a backend that
compiles checks the compiled function once against the eager one and, when compiling
fails or the two disagree beyond rounding, warns and goes on with the eager function:
an option that makes a fit faster never makes it fail or silently wrong.

* :func:`quiet_compiler`: a block in which torch's own deprecation warnings, which its
  compiler stack raises on first use, are not shown (they are not the user's business and
  would land in every result row's warnings);
* :func:`own_code`: a function with a code object of its own (torch keeps at most
  ``recompile_limit`` graphs per code object, then runs eager code);
* :func:`agree`: whether two outputs agree to float rounding;
* :class:`CheckedCompile`: a compiled objective of parameters, checked at its first call
  (values and gradients) against the eager objective (MC dropout's ``compile=True``).
  :mod:`inference.hmc_kernels` checks its NUTS kernels with :func:`agree` likewise.

Imports: torch only.
"""

from __future__ import annotations

import contextlib
import types
import warnings
from collections.abc import Callable, Iterator, Sequence

import torch


@contextlib.contextmanager
def quiet_compiler() -> Iterator[None]:
    """Hide ``DeprecationWarning``s raised inside torch's modules (e.g. "`torch.jit.script_method` is
    deprecated", from inductor's first import) for the block; every other warning shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch(\.|$)")
        yield


def own_code(fn: Callable) -> Callable:
    """``fn`` with a code object of its own. ``torch.compile`` keeps its graphs on the code object of
    the function it compiles, at most ``torch._dynamo.config.recompile_limit`` (8) of them, and runs
    eager code past that: the kernels of successive fits in one process (the benchmark runner's
    jobs) would share, and after a few fits exhaust, one cache."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def agree(fast, slow) -> bool:
    """Whether two kernels' outputs (tensors or tuples of them) agree: booleans and integers
    exactly, floats to float rounding (relative 1e-3 of the largest finite value), NaN and inf
    where the other has them."""
    fast = fast if isinstance(fast, tuple) else (fast,)
    slow = slow if isinstance(slow, tuple) else (slow,)
    for a, b in zip(fast, slow, strict=True):
        a, b = a.detach(), b.detach()
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        if not a.is_floating_point():
            if not torch.equal(a, b):
                return False
            continue
        finite_b = b[torch.isfinite(b)]
        scale = float(finite_b.abs().max()) if finite_b.numel() else 1.0
        if not torch.allclose(a, b, rtol=1e-3, atol=1e-3 * max(scale, 1.0), equal_nan=True):
            return False
    return True


class CheckedCompile:
    """``fn`` (tensors in, a tuple of tensors out, the first one the loss per replica) compiled with
    static shapes, used in place of ``fn`` once its first call agrees with ``fn``'s.

    The first call runs both and compares the outputs and the gradients of the summed first
    output with respect to ``params`` (:func:`agree`); it returns the compiled outputs,
    their graph kept for the caller's backward pass. When compiling raises, or the two
    disagree, it warns once (naming ``label``) and every call from then on is ``fn``'s.
    ``compiler`` is ``torch.compile`` unless a test passes a stand-in. ``compiled``: whether
    the compiled function is in use.
    """

    def __init__(self, fn: Callable, params: Sequence[torch.Tensor], label: str, compiler: Callable | None = None):
        self.eager = fn
        self.params = list(params)
        self.label = label
        self._compiler = compiler or (lambda f: torch.compile(f, dynamic=False))
        self._compiled: Callable | None = None
        self.compiled = True
        self._checked = False

    def __call__(self, *args):
        if not self.compiled:
            return self.eager(*args)
        if self._checked:
            return self._compiled(*args)
        self._checked = True
        try:
            with quiet_compiler():
                self._compiled = self._compiler(own_code(self.eager))
                out = self._compiled(*args)
                grads = torch.autograd.grad(out[0].sum(), self.params, retain_graph=True, allow_unused=True)
        except Exception as err:  # noqa: BLE001 - any failure of the compiler means: run eager code
            return self._fall_back(f"compiling failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})", args)
        ref = self.eager(*args)
        ref_grads = torch.autograd.grad(ref[0].sum(), self.params, retain_graph=True, allow_unused=True)
        detached = tuple(t.detach() for t in out)
        same = agree(detached, tuple(t.detach() for t in ref)) and all(
            (a is None) == (b is None) and (a is None or agree(a, b)) for a, b in zip(grads, ref_grads)
        )
        if not same:
            self._warn("the compiled objective or its gradient disagrees with the eager one beyond float rounding")
            self.compiled = False
            return ref
        return out

    def _fall_back(self, why: str, args):
        self._warn(why)
        self.compiled = False
        return self.eager(*args)

    def _warn(self, why: str) -> None:
        warnings.warn(f"{self.label}(compile=True): {why}; continuing with eager code (the same model, "
                      "eager rounding)", RuntimeWarning, stacklevel=3)
