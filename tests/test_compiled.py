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
