"""SVI's ``compile=True`` (the objective and its gradient compiled by inductor, its draws taken
before and replayed inside) and ``fast=True`` (sign flips from random bits, fused Adam), with the
pieces they are made of: replayed draws, :func:`inference.svi.replica_matmul`, the mask-free
activation and :meth:`ReplicaRandom.bits`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bnn_priors as bp
from bnn_priors.errors import InvalidParameterError
from inference import SVI
from inference.common import ReplicaRandom
from inference.replayed_draws import RecordingRandom, ReplayMismatch, ReplayRandom
from inference.svi import replica_matmul
from inference.training import Checkpoint
from models import BayesianResNet, GaussianLikelihood
from models.networks import ACTIVATIONS, MASK_FREE_ACTIVATIONS

CPU = torch.device("cpu")
IG33 = {"shape": 3.0, "spread": 1.0}
#: The nalisnick2019-released preset's SVI options (without its model options).
RELEASED = {"sign_flip": (-1.0, 3.0), "bias": "point", "scale_updates": "in-loss", "scale_mode": "variance",
            "ard_add_update": "nalisnick2019", "kl_weight": "per-weight", "init": "uniform",
            "variance_param": "softplus", "num_particles": 4, "batch_size": 16, "lr": 1e-2}


def _data(n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g)
    return X, torch.sin(X[:, 0]) + 0.1 * torch.randn(n, generator=g)


def _released_model(replicas=2):
    edge = bp.prior("inverse-nakagami", "ard", **IG33)
    mid = bp.prior("inverse-nakagami", "ard-add", **IG33)
    return BayesianResNet(3, 1, hidden=(6, 6), prior=[edge, mid, edge],
                          likelihood=GaussianLikelihood(precision=20.0), replicas=replicas)


def _mean_field_model(replicas=2):
    return BayesianResNet(3, 1, hidden=(6, 6), prior=bp.prior("half-cauchy", structure="ard"), replicas=replicas)


# ------------------------------------------------------------------ replayed draws
def _objective(source):
    """Draws of three kinds and shapes, with keyword and positional arguments, as an objective makes them."""
    a = source.rand((3, 2), torch.float32, axis=1)
    b = source.randn([4], torch.float32)
    c = source.bits((2, 5), 1)
    return a.sum() + b.sum() + (c & 1).sum()


def test_a_recorded_plan_draws_the_numbers_of_the_objective():
    """Recording passes each draw through; the plan then makes the same calls on the same streams, so
    it draws what the objective would draw next, and replayed the objective sees exactly those."""
    rec_src, ref_src = ReplicaRandom([5, 6], CPU), ReplicaRandom([5, 6], CPU)
    recorder = RecordingRandom(rec_src)
    first = _objective(recorder)
    assert first == _objective(ref_src)
    assert [d.method for d in recorder.plan.draws] == ["rand", "randn", "bits"]
    assert recorder.plan.draws[0].kwargs == (("axis", 1),) and recorder.plan.draws[1].args[0] == (4,)
    drawn = recorder.plan.draw(rec_src)
    replay = ReplayRandom(rec_src, recorder.plan, drawn)
    assert _objective(replay) == _objective(ref_src)
    replay.finish()
    assert replay.replicas == 2  # other attributes are the source's


def test_a_replay_refuses_other_draws_and_missing_ones():
    src = ReplicaRandom([0], CPU)
    recorder = RecordingRandom(src)
    _objective(recorder)
    plan = recorder.plan
    replay = ReplayRandom(src, plan, plan.draw(src))
    with pytest.raises(ReplayMismatch, match=r"draw 0 of the objective is randn\(\(3, 2\)"):
        replay.randn((3, 2), torch.float32)
    short = ReplayRandom(src, plan, plan.draw(src))
    short.rand((3, 2), torch.float32, axis=1)
    with pytest.raises(ReplayMismatch, match="took 1 of the plan's 3 draws"):
        short.finish()
    with pytest.raises(ReplayMismatch, match="3 draws and 2 tensors"):
        ReplayRandom(src, plan, plan.draw(src)[:2])
    with pytest.raises(ReplayMismatch, match="subset"):
        recorder.subset([0])


def test_random_bits_are_each_replicas_own_and_fair():
    both = ReplicaRandom([3, 4], CPU).bits((2, 3000), axis=1)
    alone = ReplicaRandom([4], CPU).bits((2, 3000), axis=1)
    assert both.shape == (2, 2, 3000) and both.dtype == torch.int64
    torch.testing.assert_close(both[:, 1:], alone, rtol=0, atol=0)
    assert (both >= 0).all()
    bits = (both.flatten().unsqueeze(-1) >> torch.arange(63)) & 1
    freq = bits.double().mean(0)  # each of the 63 bits over 12,000 numbers: 1/2 within 5 standard errors
    assert (freq - 0.5).abs().max() < 5 * 0.5 / np.sqrt(12000)


# ------------------------------------------------------------------ compiled forms
@pytest.mark.parametrize("h_shape, w_shape", [
    ((3, 7, 4), (3, 4, 5)), ((2, 3, 7, 4), (3, 4, 5)), ((2, 3, 7, 4), (3, 4, 1)), ((2, 3, 7, 4), (2, 3, 4, 5)),
])
def test_replica_matmul_is_the_matmul(h_shape, w_shape):
    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(h_shape, generator=g), torch.randn(w_shape, generator=g)
    torch.testing.assert_close(replica_matmul(h, w), h @ w)


def test_the_mask_free_relu_is_relu():
    x = torch.tensor([-2.5, -1e-30, 0.0, 3e-38, 1.5, 7.0], requires_grad=True)
    y = MASK_FREE_ACTIVATIONS["relu"](x)
    assert torch.equal(y, ACTIVATIONS["relu"](x.detach()))
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert grad.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0, 1.0]  # relu's, but 1/2 at 0


# ------------------------------------------------------------------ SVI(compile=True)
@pytest.mark.parametrize("case", ["mean-field", "released", "released-fast", "in-loss-sweep", "map-em"])
def test_compiled_steps_give_the_eager_fit_to_rounding(case):
    """The compiled objective draws the eager objective's numbers and computes its values rounded
    otherwise: over a short fit (variational scales and precision with local reparameterization; the
    released code's sign flips, in-loss scales and point biases; those with ``fast``; in-loss ARD-ADD
    scales by a coordinate sweep, which reads the last step's values; MAP-EM) the loss history
    stays within rounding's drift of the eager fit's, and the same seed repeats exactly."""
    X, y = _data()
    if case == "mean-field":
        model, options = _mean_field_model, {"steps": 30, "batch_size": 16, "num_particles": 3, "lr": 1e-2}
    elif case == "in-loss-sweep":
        model, options = _released_model, {**RELEASED, "steps": 30, "ard_add_update": "sweep"}
    elif case == "map-em":
        model = _released_model
        options = {"guide": "map", "scale_updates": "em", "steps": 30, "batch_size": 16, "lr": 1e-2}
    else:
        model, options = _released_model, {**RELEASED, "steps": 30, "fast": case == "released-fast"}

    def fit(compile):
        return SVI(**options, compile=compile, seed=[1, 2], report_every=5, progress=False).fit(model(), X, y)

    eager, compiled, again = fit(False), fit(True), fit(True)
    assert compiled.info["compile"] and not eager.info["compile"]
    np.testing.assert_allclose(compiled.info["loss_history"], eager.info["loss_history"], rtol=1e-4)
    assert compiled.info["loss_history"] == again.info["loss_history"]
    for k, v in eager.weight_means().items():
        np.testing.assert_allclose(compiled.weight_means()[k], v, rtol=1e-3, atol=1e-5)


def test_a_compiled_fit_continued_from_its_checkpoint_is_the_uninterrupted_one(tmp_path, killed_after):
    """The plans are recorded again in the continued process; the draws, and the in-loss scales the
    checkpoint keeps, give the uninterrupted compiled fit's numbers exactly."""
    X, y = _data()
    options = {**RELEASED, "steps": 24, "report_every": 2, "batches": "random", "ard_add_update": "sweep",
               "fast": True, "compile": True}
    whole = SVI(**options, seed=[3, 4], progress=False).fit(_released_model(), X, y)
    path = tmp_path / "job.pt"
    with pytest.raises(KeyboardInterrupt):
        SVI(**options, seed=[3, 4], progress=False).fit(_released_model(), X, y,
                                                          checkpoint=killed_after(path, "job", n=3))
    resumed = SVI(**options, seed=[3, 4], progress=False).fit(_released_model(), X, y,
                                                              checkpoint=Checkpoint(path, "job", every=0.0))
    assert resumed.info["resumed_from_step"] > 0 and resumed.info["compile"]
    assert resumed.info["loss_history"] == whole.info["loss_history"]
    for k, v in whole.weight_means().items():
        np.testing.assert_array_equal(resumed.weight_means()[k], v)


def test_a_compiler_failure_gives_a_warning_and_an_eager_fit(monkeypatch):
    X, y = _data()
    options = {**RELEASED, "steps": 12}
    eager = SVI(**options, seed=3, progress=False).fit(_released_model(1), X, y)

    def broken(*args, **kwargs):
        raise RuntimeError("inductor is not available")

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.warns(RuntimeWarning, match=r"SVI\(compile=True\): compiling failed"):
        fallen = SVI(**options, compile=True, seed=3, progress=False).fit(_released_model(1), X, y)
    assert not fallen.info["compile"]
    np.testing.assert_allclose(fallen.info["loss_history"], eager.info["loss_history"], rtol=1e-5)


# ------------------------------------------------------------------ SVI(fast=True)
def test_fast_changes_the_draws_not_the_model():
    """``fast=True`` flips the signs from random bits: other numbers than the default's for the same
    seeds, the same seeds twice give the same fit, and a batched replica is the replica fitted alone."""
    X, y = _data(60)
    options = {**RELEASED, "steps": 40}

    def fit(fast, seeds=(1, 2)):
        return SVI(**options, fast=fast, seed=list(seeds), progress=False).fit(_released_model(len(seeds)), X, y)

    ref, fast, again, alone = fit(False), fit(True), fit(True), fit(True, (2,))
    assert fast.info["fast"] and not ref.info["fast"]
    assert fast.info["loss_history"] == again.info["loss_history"]
    assert fast.info["loss_history"] != ref.info["loss_history"]
    for k, v in alone.weight_means().items():
        np.testing.assert_allclose(fast.weight_means()[k][1], v, rtol=1e-5, atol=1e-6)  # one replica: no axis


def test_fast_and_default_sign_flips_learn_alike():
    """Eight seeds of each on a noisy sine, 300 steps: the mean test RMSE of the two samplers agrees
    (about 0.2 each here, standard errors near 0.004; the bar is 0.05)."""
    X, y = _data(80, seed=2)
    Xt, yt = _data(200, seed=9)
    seeds = list(range(8))
    options = {**RELEASED, "steps": 300}
    rmse = []
    for fast in (False, True):
        post = SVI(**options, fast=fast, seed=seeds, progress=False).fit(_released_model(len(seeds)), X, y)
        rmse.append(np.asarray(post.evaluate(Xt, yt, num_samples=50)["rmse"]))
    assert max(r.mean() for r in rmse) < 0.3
    assert abs(rmse[0].mean() - rmse[1].mean()) < 0.05


def test_a_checkpoint_of_the_other_fast_setting_is_refused(tmp_path, killed_after):
    X, y = _data()
    path = tmp_path / "job.pt"
    options = {**RELEASED, "steps": 20, "report_every": 2, "batches": "random"}
    with pytest.raises(KeyboardInterrupt):
        SVI(**options, fast=True, seed=[3, 4], progress=False).fit(
            _released_model(), X, y, checkpoint=killed_after(path, "job", n=1))
    with pytest.raises(InvalidParameterError, match="fast=True, and this fit has fast=False"):
        SVI(**options, seed=[3, 4], progress=False).fit(_released_model(), X, y, checkpoint=Checkpoint(path, "job"))
