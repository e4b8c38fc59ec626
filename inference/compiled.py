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
* :func:`compile_static`: a function of tensors compiled by inductor for one set of input
  shapes without ``torch.compile``'s front end (no guards to evaluate per call: a kernel
  called thousands of times per second, as NUTS's per-leaf kernels are, saves that cost);
* :class:`CheckedCompile`: a compiled objective of parameters, checked at the first call of
  each graph (values and gradients) against the eager objective (MC dropout's ``compile=True``).
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


class StaticKernel:
    """A function of tensors compiled for the shapes and strides of one set of example inputs
    (:func:`compile_static`). A call whose inputs have those shapes but other strides (a
    non-contiguous view) runs on contiguous copies of them: the same numbers, a copy's cost;
    :attr:`restrided` counts such calls over all kernels (a sampler that meets it on a hot path
    should pass contiguous tensors)."""

    restrided = 0

    def __init__(self, compiled: Callable, returns_tensor: bool, example: Sequence[torch.Tensor]):
        self._compiled = compiled
        self._returns_tensor = returns_tensor
        # inductor checks sizes and strides but not dtypes or devices: another dtype would be read as
        # the example's bytes
        self._kinds = [(t.dtype, t.device) if torch.is_tensor(t) else None for t in example]

    def __call__(self, *args):
        kinds = [(a.dtype, a.device) if torch.is_tensor(a) else None for a in args]
        if kinds != self._kinds:
            raise TypeError(f"StaticKernel: compiled for inputs {self._kinds}, called with {kinds}")
        try:
            out = self._compiled(*args)
        except AssertionError:  # inductor checks every input's size and stride before it computes
            StaticKernel.restrided += 1
            out = self._compiled(*(a.contiguous() if torch.is_tensor(a) else a for a in args))
        return out if self._returns_tensor else tuple(out)


def compile_static(fn: Callable, example: Sequence[torch.Tensor]) -> StaticKernel:
    """``fn`` (tensors in; a tensor or a tuple of tensors out, no side effects) compiled by inductor
    for inputs of ``example``'s shapes, dtypes and strides.

    The function is traced once by ``make_fx`` on fake tensors (so Python control flow that
    reads an input's values raises instead of being frozen at the example's values), and the
    graph is compiled by ``torch._inductor.standalone_compile``. Tensors the function closes
    over, such as the data, are copied into the graph as constants when it compiles: a later
    in-place change of one is not seen, and a branch on a closed-over tensor's value is frozen
    (so close only over what stays fixed). A call with other dtypes or devices than the
    example's raises ``TypeError``. Unlike ``torch.compile``, no guards are checked
    at each call: on NUTS's per-leaf kernels (one chain, boston's 13-50-1 network) that was
    about 0.23 against 0.33 ms per leaf (``benchmarks/nuts_leaf_cost.py``). Raises when tracing
    or compiling fails (the caller falls back). Inductor caches the compiled code on disk, so a
    second fit with the same graph loads it.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    example = list(example)
    returns_tensor = torch.is_tensor(fn(*example))
    graph = make_fx(fn, tracing_mode="fake", _allow_non_fake_inputs=True)(*example)
    return StaticKernel(torch._inductor.standalone_compile(graph, example, dynamic_shapes="from_example_inputs"),
                        returns_tensor, example)


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
    static shapes, used in place of ``fn`` where it agrees with ``fn``.

    The first call with each new set of input shapes (each compiles a graph of its own: an
    epoch's last, smaller mini-batch is a second one) is checked: ``fn`` runs first, its
    outputs and the gradients of its summed first output with respect to ``params`` kept
    detached, then the compiled function with its gradients (:func:`agree` compares them;
    ``autograd.grad`` leaves the ``.grad`` fields alone), and the compiled function once more
    for the outputs it returns (inductor's backward may donate its buffers, so a graph is not
    kept through the check's gradients; the inputs are the same, so are the outputs). When compiling or the
    compiled call raises, or the two disagree, it warns once (naming ``label``) and every
    call from then on is ``fn``'s, the failed call included (``fn`` is deterministic given
    its inputs, so nothing is lost). ``compiler`` is ``torch.compile`` unless a test passes
    a stand-in; ``stacklevel`` is the warning's, as for :func:`warnings.warn`, counted from the
    code that calls this object (1: that code). ``compiled``:
    whether the compiled function is in use.
    """

    def __init__(self, fn: Callable, params: Sequence[torch.Tensor], label: str, compiler: Callable | None = None,
                 stacklevel: int = 1):
        self.eager = fn
        self.params = list(params)
        self.label = label
        self.stacklevel = stacklevel
        self._compiler = compiler or (lambda f: torch.compile(f, dynamic=False))
        self._compiled: Callable | None = None
        self.compiled = True
        self._checked: set[tuple] = set()

    def __call__(self, *args):
        if not self.compiled:
            return self.eager(*args)
        shapes = tuple(tuple(t.shape) for t in _tensors(args))
        if shapes in self._checked:
            return self._compiled(*args)
        ref = self.eager(*args)
        ref_grads = torch.autograd.grad(ref[0].sum(), self.params, allow_unused=True)  # frees the eager graph
        ref = tuple(t.detach() for t in ref)
        try:
            with quiet_compiler():
                if self._compiled is None:
                    self._compiled = self._compiler(own_code(self.eager))
                out = self._compiled(*args)
                grads = torch.autograd.grad(out[0].sum(), self.params, allow_unused=True)
        except Exception as err:  # noqa: BLE001 - any failure of the compiler means: run eager code
            first_line = str(err).partition("\n")[0][:200]
            return self._fall_back(f"compiling failed ({type(err).__name__}: {first_line})", args)
        same = agree(out, ref) and all(  # agree compares detached values
            (a is None) == (b is None) and (a is None or agree(a, b)) for a, b in zip(grads, ref_grads)
        )
        if not same:
            return self._fall_back("the compiled objective or its gradient disagrees with the eager one beyond "
                                   "float rounding", args)
        self._checked.add(shapes)
        return self._compiled(*args)  # again, for a graph of its own: compiled backward passes may not be retained

    def _fall_back(self, why: str, args):
        warnings.warn(f"{self.label}(compile=True): {why}; continuing with eager code (the same model, "
                      "eager rounding)", RuntimeWarning, stacklevel=self.stacklevel + 2)
        self.compiled = False
        self._compiled = None
        return self.eager(*args)


def _tensors(value) -> list[torch.Tensor]:
    """The tensors in ``value`` (nested tuples, lists and dicts), in order."""
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []
