"""``inference.compiled``: the check of a compiled objective against eager code, and the fallback."""

from __future__ import annotations

import pytest
import torch

from inference.compiled import CheckedCompile, agree, own_code


def _objective_and_params():
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)

    def objective(x):
        loss = ((x @ w) ** 2).reshape(1)
        return loss, x.sum().reshape(1)

    return objective, w


def test_an_agreeing_compiler_is_used_and_its_outputs_keep_their_graph():
    objective, w = _objective_and_params()
    calls = []

    def stand_in(f):
        def run(*args):
            calls.append(1)
            return f(*args)
        return run

    run = CheckedCompile(objective, [w], "Test", compiler=stand_in)
    x = torch.tensor([1.0, 2.0, 3.0])
    loss, _ = run(x)
    loss.sum().backward()  # the graph of the returned outputs survives the check's gradients
    torch.testing.assert_close(w.grad, 2 * (x @ w).detach() * x)
    assert len(calls) == 2  # the checked call, then the one whose graph is returned
    run(x)
    assert run.compiled and len(calls) == 3


def test_a_compiler_that_fails_falls_back_to_eager_code_with_a_warning():
    objective, w = _objective_and_params()

    def broken(f):
        raise RuntimeError("no C++ compiler\nmore lines")

    run = CheckedCompile(objective, [w], "Test", compiler=broken)
    x = torch.ones(3)
    with pytest.warns(RuntimeWarning, match=r"Test\(compile=True\): compiling failed \(RuntimeError: no C\+\+ compiler\)"):
        out = run(x)
    assert not run.compiled and agree(out, objective(x))


def test_a_compiled_function_that_disagrees_is_dropped():
    objective, w = _objective_and_params()

    def wrong(f):
        return lambda *args: tuple(t * 1.1 for t in f(*args))

    run = CheckedCompile(objective, [w], "Test", compiler=wrong)
    x = torch.ones(3)
    with pytest.warns(RuntimeWarning, match="disagrees"):
        out = run(x)
    assert not run.compiled
    torch.testing.assert_close(out[0], objective(x)[0], rtol=0, atol=0)


def test_a_wrong_gradient_alone_is_caught():
    objective, w = _objective_and_params()

    def wrong_gradient(f):
        def run(x):
            loss, other = f(x)
            return loss.detach() + 0.0 * w.sum() + (w.sum() - w.sum().detach()), other  # same value, other gradient
        return run

    run = CheckedCompile(objective, [w], "Test", compiler=wrong_gradient)
    with pytest.warns(RuntimeWarning, match="disagrees"):
        run(torch.ones(3))
    assert not run.compiled


def test_own_code_gives_a_new_code_object_that_behaves_the_same():
    def f(x, k=2):
        return x * k

    g = own_code(f)
    assert g.__code__ is not f.__code__ and g(3) == f(3) == 6 and g(3, k=5) == 15


def test_each_new_shape_is_checked_and_a_failure_there_falls_back():
    """The epoch's last, smaller mini-batch compiles a graph of its own: its failure, even with an
    empty message, gives the warning and eager code, not an exception."""
    _, w = _objective_and_params()

    def fails_on_two_rows(f):
        def run(x):
            if x.shape[0] == 2:
                raise AssertionError()
            return f(x)
        return run

    big, small = torch.ones(4, 3), torch.ones(2, 3)
    run = CheckedCompile(lambda x: (((x @ w) ** 2).sum().reshape(1), x.sum().reshape(1)), [w], "Test",
                         compiler=fails_on_two_rows)
    run(big)
    assert run.compiled
    with pytest.warns(RuntimeWarning, match=r"compiling failed \(AssertionError: \)"):
        out = run(small)
    assert not run.compiled and torch.equal(out[0], ((small @ w) ** 2).sum().reshape(1))


def _inductor_or_skip(fn, example):
    from inference.compiled import compile_static

    try:
        return compile_static(fn, example)
    except Exception as err:  # noqa: BLE001 - no C++ compiler on this machine
        pytest.skip(f"inductor cannot compile here: {type(err).__name__}: {str(err)[:100]}")


def test_a_static_kernel_computes_what_the_function_does_for_any_values():
    """Compiled once at example inputs, it reads the values of later calls (a tensor the function
    closes over, like the data, is a constant), returns a tuple where the function returns one and
    a tensor where it returns a tensor, and a call with other strides runs on contiguous copies."""
    from inference.compiled import StaticKernel

    data = torch.linspace(-1.0, 1.0, 7)

    def pair(a, b):
        return (a * data).sum(-1) + b, torch.where(a > 0, a, b[:, None])

    def single(a, b):
        return (a * a).sum(-1) * b

    g = torch.Generator().manual_seed(0)
    example = [torch.randn(3, 7, generator=g), torch.randn(3, generator=g)]
    k_pair, k_single = _inductor_or_skip(pair, example), _inductor_or_skip(single, example)
    for _ in range(3):
        a, b = torch.randn(3, 7, generator=g), torch.randn(3, generator=g)
        out = k_pair(a, b)
        assert isinstance(out, tuple) and len(out) == 2
        assert agree(out, pair(a, b))
        assert torch.is_tensor(k_single(a, b)) and agree(k_single(a, b), single(a, b))
    before = StaticKernel.restrided
    wide = torch.randn(3, 14, generator=g)
    view = wide[:, ::2]  # the example's shape, other strides
    assert agree(k_pair(view, b), pair(view, b))
    assert StaticKernel.restrided == before + 1
    with pytest.raises(TypeError, match="compiled for inputs"):  # inductor would read the bytes as float32
        k_pair(a.double(), b)


def test_a_static_kernel_refuses_control_flow_on_values():
    """Tracing reads fake tensors, so a branch on a tensor's value raises at compile time (the
    caller then uses torch.compile) instead of freezing the branch the example took."""
    from inference.compiled import compile_static

    def branchy(a):
        return a * 2 if bool((a > 0).all()) else a - 1

    with pytest.raises(RuntimeError, match="(?i)data.dependent"):
        compile_static(branchy, [torch.ones(4)])
