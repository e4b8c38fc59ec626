"""The shared training loop: batch schedules, divergence checks, checkpoints that resume exactly."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bnn_priors
import models
from bnn_priors.errors import FitDivergedError, InvalidParameterError
from inference import SVI, MCDropout
from inference.common import ReplicaRandom
from inference.training import (
    FLUSH_DENORMALS_ENV,
    Checkpoint,
    FullBatch,
    RandomSubsets,
    Shuffled,
    adam,
    denormals_flushed,
    flush_denormals,
    train,
)


def _data(R=2, N=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(R, N, 3, generator=g)
    y = X[..., 0].sin() + 0.1 * torch.randn(R, N, generator=g)
    return X, y


def _fits():
    """(name, backend factory, model factory) of fits with every kind of state a checkpoint must hold."""
    def mlp(noise, structure, R=2):
        return lambda: models.BayesianMLP(3, 1, hidden=(8,), prior=bnn_priors.prior(noise, structure=structure), replicas=R)

    def resnet(noise, structure, R=2):
        return lambda: models.BayesianResNet(3, 1, hidden=(8, 8), prior=bnn_priors.prior(noise, structure=structure), replicas=R)

    return [
        ("svi-minibatch", lambda: SVI(steps=60, batch_size=16, num_particles=2, report_every=10, seed=[3, 4], progress=False),
         resnet("half-cauchy", "ard")),
        ("svi-em", lambda: SVI(steps=55, scale_updates="em", report_every=10, seed=[3, 4], progress=False),
         resnet("inverse-nakagami", "ard-add")),
        ("map-em", lambda: SVI(guide="map", steps=40, scale_updates="em", report_every=10, seed=[3, 4], progress=False),
         resnet("inverse-nakagami", "ard")),
        ("mc-dropout-learned-tau", lambda: MCDropout(epochs=6, batch_size=16, seed=[3, 4], progress=False),
         mlp("bernoulli", "ard")),
        ("mc-dropout-fixed", lambda: MCDropout(epochs=5, batch_size=16, precision=[2.0, 3.0], num_particles=2, seed=[3, 4],
                                                progress=False), mlp("gaussian", "ard-add")),
        ("mc-dropout-fast", lambda: MCDropout(epochs=6, batch_size=16, fast=True, seed=[3, 4], progress=False),
         mlp("bernoulli", "ard-add")),
        ("mc-dropout-noise-per-replica", lambda: MCDropout(epochs=6, batch_size=16, fast=True, seed=[3, 4],
                                                            noise_params={"p": [0.05, 0.3]}, progress=False),
         mlp("bernoulli", "ard")),
    ]


@pytest.mark.parametrize("name,backend,model", _fits(), ids=[f[0] for f in _fits()])
def test_a_fit_continued_from_a_checkpoint_equals_the_uninterrupted_fit(tmp_path, killed_after, name, backend, model):
    X, y = _data()
    whole = backend().fit(model(), X, y)

    path = tmp_path / "job.pt"
    with pytest.raises(KeyboardInterrupt):
        backend().fit(model(), X, y, checkpoint=killed_after(path, "job", n=2))
    assert path.exists()
    earlier = torch.load(path, weights_only=False)["seconds"]
    resumed = backend().fit(model(), X, y, checkpoint=Checkpoint(path, "job", every=0.0))

    assert resumed.info["resumed_from_step"] > 0
    assert resumed.info["loss_history"] == whole.info["loss_history"]
    # The time of the killed segment up to its checkpoint counts in the continued fit's seconds.
    assert resumed.info["seconds_before_resume"] == earlier > 0 and resumed.info["seconds"] > earlier
    assert "seconds_before_resume" not in whole.info
    for k, v in whole.weight_means().items():
        np.testing.assert_array_equal(resumed.weight_means()[k], v)
    a, b = whole.evaluate(X, y, num_samples=5), resumed.evaluate(X, y, num_samples=5)
    np.testing.assert_array_equal(a["rmse"], b["rmse"])
    np.testing.assert_array_equal(a["log_likelihood"], b["log_likelihood"])


def _dropout_mlp():
    return models.BayesianMLP(3, 1, hidden=(8,), prior=bnn_priors.prior("bernoulli", structure="ard"), replicas=2)


def test_a_checkpoint_of_the_other_fast_setting_is_refused(tmp_path, killed_after):
    """MC dropout's ``fast`` changes the random stream and the optimizer's kernel: a fit of the other
    setting must not continue the file (the optimizer state would carry the fused flag over)."""
    X, y = _data()
    path = tmp_path / "job.pt"
    with pytest.raises(KeyboardInterrupt):
        MCDropout(epochs=6, batch_size=16, fast=True, seed=[3, 4], progress=False).fit(
            _dropout_mlp(), X, y, checkpoint=killed_after(path, "job", n=1))
    with pytest.raises(InvalidParameterError, match="fast=True, and this fit has fast=False"):
        MCDropout(epochs=6, batch_size=16, seed=[3, 4], progress=False).fit(_dropout_mlp(), X, y,
                                                                          checkpoint=Checkpoint(path, "job"))


def test_a_checkpoint_of_other_noise_params_is_refused(tmp_path, killed_after):
    X, y = _data()
    path = tmp_path / "job.pt"
    with pytest.raises(KeyboardInterrupt):
        MCDropout(epochs=6, batch_size=16, seed=[3, 4], noise_params={"p": [0.1, 0.2]}, progress=False).fit(
            _dropout_mlp(), X, y, checkpoint=killed_after(path, "job", n=1))
    with pytest.raises(InvalidParameterError, match="noise_params=.*0.2.*this fit has noise_params=None"):
        MCDropout(epochs=6, batch_size=16, seed=[3, 4], progress=False).fit(_dropout_mlp(), X, y,
                                                                          checkpoint=Checkpoint(path, "job"))


def test_a_checkpoint_written_before_the_seconds_were_kept_still_continues(tmp_path, killed_after):
    X, y = _data()
    backend = lambda: MCDropout(epochs=6, batch_size=16, seed=[3, 4], progress=False)  # noqa: E731
    whole = backend().fit(_dropout_mlp(), X, y)
    path = tmp_path / "job.pt"
    with pytest.raises(KeyboardInterrupt):
        backend().fit(_dropout_mlp(), X, y, checkpoint=killed_after(path, "job", n=2))
    saved = torch.load(path, weights_only=False)
    del saved["seconds"], saved["backend"]["fast"]
    torch.save(saved, path)
    resumed = backend().fit(_dropout_mlp(), X, y, checkpoint=Checkpoint(path, "job"))
    assert resumed.info["seconds_before_resume"] == 0.0 and resumed.info["resumed_from_step"] > 0
    assert resumed.info["loss_history"] == whole.info["loss_history"]


def test_a_checkpoint_of_another_fit_is_refused(tmp_path, killed_after):
    X, y = _data()
    path = tmp_path / "job.pt"
    fit = _fits()[0]
    with pytest.raises(KeyboardInterrupt):
        fit[1]().fit(fit[2](), X, y, checkpoint=killed_after(path, "job-a", n=1))
    with pytest.raises(InvalidParameterError, match="belongs to another fit"):
        fit[1]().fit(fit[2](), X, y, checkpoint=Checkpoint(path, "job-b"))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidParameterError, match="cannot be read"):
        fit[1]().fit(fit[2](), X, y, checkpoint=Checkpoint(path, "job-a"))


def test_a_checkpoint_for_another_model_is_refused(tmp_path, killed_after):
    X, y = _data()
    path = tmp_path / "job.pt"
    small = models.BayesianMLP(3, 1, hidden=(8,), prior=bnn_priors.prior("half-cauchy"), replicas=2)
    wide = models.BayesianMLP(3, 1, hidden=(9,), prior=bnn_priors.prior("half-cauchy"), replicas=2)
    with pytest.raises(KeyboardInterrupt):
        SVI(steps=30, report_every=10, progress=False).fit(small, X, y, checkpoint=killed_after(path, "k", n=1))
    with pytest.raises(InvalidParameterError, match="shape"):
        SVI(steps=30, report_every=10, progress=False).fit(wide, X, y, checkpoint=Checkpoint(path, "k"))


def test_checkpoints_are_written_no_more_often_than_asked(tmp_path):
    X, y = _data()
    path = tmp_path / "job.pt"
    model = models.BayesianMLP(3, 1, hidden=(8,), prior=bnn_priors.prior("half-cauchy"), replicas=2)
    SVI(steps=50, report_every=10, progress=False).fit(model, X, y, checkpoint=Checkpoint(path, "k", every=3600))
    assert not path.exists()  # the first save is due only after an hour
    with pytest.raises(InvalidParameterError, match="non-negative"):
        Checkpoint(path, "k", every=-1)


def test_shuffled_batches_cover_every_row_once_per_epoch():
    rng = ReplicaRandom([0, 1], torch.device("cpu"))
    schedule = Shuffled(rng, 10, 4)
    assert schedule.steps_per_round == 3
    batches = list(schedule.round(3))
    assert [b.shape for b in batches] == [(2, 4), (2, 4), (2, 2)]
    rows = torch.cat(batches, dim=1)
    for r in range(2):
        assert sorted(rows[r].tolist()) == list(range(10))
    assert not torch.equal(rows[0], rows[1])  # each replica its own order


def test_random_subsets_and_full_batches():
    rng = ReplicaRandom([0], torch.device("cpu"))
    subsets = list(RandomSubsets(rng, 10, 3, 5).round(5))
    assert len(subsets) == 5 and all(s.shape == (1, 3) and len(set(s[0].tolist())) == 3 for s in subsets)
    assert list(FullBatch(4).round(2)) == [None, None]


def test_the_loop_runs_the_steps_in_rounds_and_stops_on_a_non_finite_loss():
    X, y = _data(R=1)
    w = torch.zeros(3, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    rounds = []

    def step(Xb, yb):
        loss = ((Xb @ w - yb) ** 2).mean()
        return loss, loss

    done = train(step, X, y, [w], opt, FullBatch(4), 10, backend="toy", hint="none",
                 end_round=lambda where: rounds.append(where.step), progress=False)
    assert (done.steps, done.rounds) == (10, 3)
    assert rounds == [4, 8, 10]  # the last round is the shorter rest

    def bad_step(Xb, yb):
        loss = ((Xb @ w - yb) ** 2).mean()
        monitor = loss + (torch.inf if bad_step.calls == 6 else 0.0)
        bad_step.calls += 1
        return loss, monitor

    bad_step.calls = 0
    with pytest.raises(FitDivergedError, match="toy: the loss became NaN or infinite at step 6; try this"):
        train(bad_step, X, y, [w], opt, FullBatch(4), 10, backend="toy", hint="try this", progress=False)
    with pytest.raises(InvalidParameterError, match="steps"):
        train(step, X, y, [w], opt, FullBatch(4), 0, backend="toy", hint="", progress=False)


needs_ftz = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                               reason="subnormal flushing is tested on x86-64 (FTZ/DAZ)")


@needs_ftz
def test_flush_denormals_reads_and_writes_subnormals_as_zero_and_restores_the_thread(monkeypatch):
    monkeypatch.delenv(FLUSH_DENORMALS_ENV, raising=False)
    tiny = torch.tensor([1e-39, 3e-38, -2e-40], dtype=torch.float32)  # subnormal, normal, subnormal
    assert not denormals_flushed()
    assert (tiny * 1.0).tolist() == tiny.tolist()
    with flush_denormals():
        assert denormals_flushed()
        assert (tiny * 1.0).tolist() == [0.0, tiny[1].item(), 0.0]  # read as zero
        assert (torch.tensor([1e-30]) * 1e-10).item() == 0.0  # a subnormal result is written as zero
        with flush_denormals(False):
            assert not denormals_flushed()
        assert denormals_flushed()
    assert not denormals_flushed()
    monkeypatch.setenv(FLUSH_DENORMALS_ENV, "0")
    with flush_denormals():
        assert not denormals_flushed()


@needs_ftz
def test_the_loop_steps_with_subnormals_flushed_and_says_so(monkeypatch):
    monkeypatch.delenv(FLUSH_DENORMALS_ENV, raising=False)
    X, y = _data(R=1)
    w = torch.tensor([1e-39, 0.5, -2e-40], requires_grad=True)  # two weights shrunk to subnormals
    seen = []

    def step(Xb, yb):
        seen.append(denormals_flushed())
        loss = ((Xb @ (w * 1.0) - yb) ** 2).mean()
        return loss, loss

    done = train(step, X, y, [w], torch.optim.SGD([w], lr=0.0), FullBatch(4), 3, backend="toy", hint="",
                 progress=False)
    assert seen == [True] * 3 and done.denormals_flushed and done.arithmetic_info() == {"denormals_flushed": True}
    assert not denormals_flushed()  # restored after the fit
    monkeypatch.setenv(FLUSH_DENORMALS_ENV, "0")
    seen.clear()
    done = train(step, X, y, [w], torch.optim.SGD([w], lr=0.0), FullBatch(4), 2, backend="toy", hint="",
                 progress=False)
    assert seen == [False] * 2 and not done.denormals_flushed


def test_backends_record_how_their_steps_treated_subnormals():
    X, y = _data(R=1)
    net = models.BayesianMLP(3, 1, hidden=(8,), prior=bnn_priors.prior("half-cauchy", structure="ard"))
    post = SVI(steps=5, progress=False, seed=0).fit(net, X[0], y[0])
    with flush_denormals():  # what the loop sets: True where the CPU has the flags and the switch is on
        expected = denormals_flushed()
    assert post.info["denormals_flushed"] is expected


# ------------------------------------------------- faster steps, the same numbers
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape, axis", [((7, 5), 0), ((128, 13), 0), ((1, 40), 1), ((3, 17), 1), ((4, 6, 1), 1), ((5,), 1)])
@pytest.mark.parametrize("replicas", [1, 3])
def test_replica_draws_filled_in_place_equal_the_stacked_draws(dtype, shape, axis, replicas):
    """``ReplicaRandom`` fills one tensor per draw where it can; the numbers, their layout and the
    generators' states after the draw are those of stacking one fresh tensor per replica."""
    seeds = [3 + 5 * r for r in range(replicas)]
    for name in ("rand", "randn"):
        rng = ReplicaRandom(seeds, torch.device("cpu"))
        got = getattr(rng, name)(shape, dtype, axis)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        want = torch.stack([getattr(torch, name)(shape, generator=g, dtype=dtype) for g in gens], axis)
        assert got.shape == want.shape and got.dtype == dtype
        assert torch.equal(got, want) and got.is_contiguous()
        assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(rng.generators, gens))


def test_the_foreach_adam_update_equals_the_per_tensor_loop():
    """``training.adam`` (the multi-tensor update) gives bit for bit the parameters of torch's
    default per-tensor Adam over many steps, on parameters of several shapes."""
    def run(make):
        g = torch.Generator().manual_seed(0)
        params = [torch.randn(s, generator=g).requires_grad_() for s in ((4, 13, 50), (4, 50, 1), (4, 50), (4,))]
        opt = make(params)
        for _ in range(30):
            loss = sum(((p - 0.3) * torch.randn(p.shape, generator=g)).pow(2).sum() for p in params)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return [p.detach() for p in params]

    fast = run(lambda ps: adam(ps, lr=1e-2))
    default = run(lambda ps: torch.optim.Adam(ps, lr=1e-2))
    assert all(torch.equal(a, b) for a, b in zip(fast, default))
    assert not torch.equal(fast[0], run(lambda ps: adam(ps, lr=2e-2))[0])  # the comparison can fail


def test_a_checkpoint_of_another_device_is_refused_and_one_without_devices_still_continues(tmp_path, killed_after):
    """Random streams do not carry over between devices: a file saved on CUDA is refused on the
    CPU with a message saying so; a file written before devices were recorded continues."""
    X, y = _data()
    path = tmp_path / "job.pt"

    def fit(checkpoint):
        return SVI(steps=30, report_every=10, seed=[3, 4], progress=False).fit(
            models.BayesianMLP(3, 1, hidden=(8,), prior=bnn_priors.prior("half-cauchy"), replicas=2), X, y,
            checkpoint=checkpoint)

    whole = fit(None)
    with pytest.raises(KeyboardInterrupt):
        fit(killed_after(path, "k", n=1))
    state = {k: v for k, v in torch.load(path, weights_only=False).items() if k not in ("version", "key")}
    Checkpoint(path, "k").save({**state, "generator_devices": ["cuda"] * len(state["generators"])})
    with pytest.raises(InvalidParameterError, match="saved by a fit on cuda, and this fit runs on cpu"):
        fit(Checkpoint(path, "k"))
    Checkpoint(path, "k").save({k: v for k, v in state.items() if k != "generator_devices"})
    resumed = fit(Checkpoint(path, "k"))
    assert resumed.info["resumed_from_step"] > 0
    for k, v in whole.weight_means().items():
        np.testing.assert_array_equal(resumed.weight_means()[k], v)


def test_removing_a_checkpoint_removes_the_partial_file_of_a_killed_save(tmp_path):
    """A process killed inside ``save`` leaves its temporary file; once the job's rows are saved the
    runner removes the checkpoint, and with it that file (so the checkpoint folder can go too)."""
    ck = Checkpoint(tmp_path / "job.pt", "k")
    ck.save({"step": 1})
    (tmp_path / ".job.pt.12345.tmp").write_bytes(b"half a file")  # what SIGKILL mid-save leaves
    (tmp_path / ".other.pt.12345.tmp").write_bytes(b"another job's")
    ck.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.12345.tmp"]


_FAULTS = """
import resource, statistics, torch
from torch.optim.optimizer import register_optimizer_step_post_hook
import bnn_priors, inference, models
from inference.allocator import keep_freed_memory
X, y = torch.randn(455, 13), torch.randn(455)
counts = []  # the process's minor page faults after every optimizer step
register_optimizer_step_post_hook(lambda *_: counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt))
def fit(epochs):
    net = models.BayesianMLP(13, 1, hidden=(50,), prior=bnn_priors.prior("bernoulli", p=0.05, structure="ard"), replicas=240)
    inference.MCDropout(epochs=epochs, seed=list(range(240)), progress=False).fit(net, X, y)
fit(1)
counts.clear()
fit(6)
print(keep_freed_memory(), statistics.median(b - a for a, b in zip(counts, counts[1:])))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's")
def test_the_loop_keeps_freed_memory_instead_of_faulting_in_fresh_pages():
    """MC dropout at R = 240 on boston's shape: with glibc's defaults every step faults in thousands of
    fresh pages (about 3,000 on this project's machine); with the loop's setting, almost none. The figure
    is the median over a fit's steps: the first steps of a fit may fault in its new tensors, a few
    thousand pages at times, and are not what is measured."""
    def faults_per_step(env):
        plain = {k: v for k, v in os.environ.items()  # glibc's defaults: nothing preloaded, no tunables
                 if k not in ("LD_PRELOAD", "GLIBC_TUNABLES") and not k.startswith("MALLOC_")}
        out = subprocess.run([sys.executable, "-c", _FAULTS], env={**plain, **env}, capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parents[1])
        kept, faults = out.stdout.splitlines()[-1].split()
        return kept == "True", float(faults)

    kept_off, off = faults_per_step({"BNN_PRIORS_KEEP_FREED_MEMORY": "0", "OMP_NUM_THREADS": "1"})
    assert not kept_off
    assert off > 1000, off
    kept_on, on = faults_per_step({"OMP_NUM_THREADS": "1"})
    assert kept_on
    assert on < 0.02 * off, (on, off)


@pytest.mark.parametrize("expanded", [False, True])
@pytest.mark.parametrize("target_shape", [(), (2,)])
def test_take_gives_the_rows_of_each_replicas_indices(target_shape, expanded):
    from inference.training import _take

    g = torch.Generator().manual_seed(0)
    R, N, B = 5, 17, 6
    X, y = torch.randn(R, N, 3, generator=g), torch.randn(R, N, *target_shape, generator=g)
    if expanded:  # one data set shared by the replicas, as check_inputs gives it
        X, y = X[:1].expand(R, N, 3), y[:1].expand(R, N, *target_shape)
    idx = torch.stack([torch.randperm(N, generator=g)[:B] for _ in range(R)])
    Xb, yb = _take(X, y, idx)
    rows = torch.arange(R)[:, None]
    assert torch.equal(Xb, X[rows, idx]) and torch.equal(yb, y[rows, idx])
    assert _take(X, y, None) == (X, y)
