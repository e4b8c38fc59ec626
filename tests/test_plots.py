"""Tests of the figures of a results file (bnn_priors.suite.plots) and of ``bnn-priors plot``: where a
figure may be written, published figures beside ours only in the same metric, and the calibration
curves from the stored interval coverage."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bnn_priors.cli.main import main
from bnn_priors.errors import DataError, InvalidParameterError
from bnn_priors.suite import plots
from bnn_priors.suite.store import ResultsStore
from inference.common import Posterior

LEVELS = list(Posterior.COVERAGE_LEVELS)


def _row(dataset, split, label, rmse, mae=None, inside=None, targets=40):
    config = {"dataset": dataset, "split": split, "label": label}
    return {
        "config_hash": f"{dataset}-{split}-{label}", "config": json.dumps(config), "label": label, "method_key": label,
        "dataset": dataset, "split": split, "noise": "half-cauchy", "structure": "ard", "arch": "mlp-1x50",
        "inference": "svi", "budget": 10, "budget_unit": "steps", "seed": 0, "status": "ok",
        "rmse": rmse, "log_likelihood": -rmse, "sample_mae": mae,
        "coverage": None if inside is None else json.dumps({"levels": LEVELS, "inside": inside, "targets": targets}),
        "timestamp": "2026-01-01T00:00:00",
    }


@pytest.fixture
def db(tmp_path) -> Path:
    """yacht and boston, two splits, methods A (with sample-MAE and coverage) and Old (recorded before either)."""
    path = tmp_path / "runs.sqlite"
    a_inside = [[4, 8, 12, 16, 20, 24, 28, 32, 36, 38, 40], [4, 8, 12, 16, 20, 24, 28, 32, 36, 38, 40]]
    rows = []
    for dataset, base in (("yacht", 1.0), ("boston", 3.0)):
        for split in (0, 1):
            rows.append(_row(dataset, split, "A", base + 0.1 * split, 0.7 * base, a_inside[split]))
            rows.append(_row(dataset, split, "Old", base + 0.2 + 0.1 * split))
    with ResultsStore(path) as store:
        store.insert(rows)
    return path


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("bnn-priors: error: ")
    return lines[0]


# ------------------------------------------------------- where a figure goes (issue 14, items 5 and 6)
def test_plot_into_a_folder_that_cannot_be_written_is_one_line(db, tmp_path, capsys):
    if os.geteuid() == 0:  # root writes into a read-only mode folder; /sys refuses new files even to root
        folder = Path("/sys")
        if not folder.is_dir():
            pytest.skip("no /sys to stand for a folder root cannot write")
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
    assert main(["plot", "--results", str(db), "--out", str(folder / "rmse.png")]) == 2
    line = _one_error_line(capsys)
    assert f"cannot write {folder / 'rmse.png'}" in line and not (folder / "rmse.png").exists()


def test_a_write_error_of_any_figure_is_one_line(db, tmp_path, capsys, monkeypatch):
    import matplotlib.figure

    def refuse(self, fname, **kwargs):
        raise PermissionError(13, "Permission denied", str(fname))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", refuse)
    for option in ("--out", "--calibration"):
        assert main(["plot", "--results", str(db), option, str(tmp_path / "x.png")]) == 2
        assert f"cannot write {tmp_path / 'x.png'}: Permission denied" in _one_error_line(capsys)


def test_an_unknown_image_format_is_one_line(db, tmp_path, capsys):
    assert main(["plot", "--results", str(db), "--out", str(tmp_path / "x.notanext")]) == 2
    line = _one_error_line(capsys)
    assert "'.notanext' is not an image format" in line and ".png" in line and ".pdf" in line
    assert not list(tmp_path.glob("x.*"))


def test_a_name_without_suffix_gets_png_and_the_written_path_is_printed(db, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["plot", "--results", str(db), "--out", "somedir"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "somedir.png" and (tmp_path / "somedir.png").read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "folder").mkdir()
    assert main(["plot", "--results", str(db), "--out", "folder"]) == 2
    assert "folder is a folder" in _one_error_line(capsys)


# ------------------------------------------------------------ published figures beside ours
def test_published_figures_are_drawn_only_in_the_same_metric_and_on_our_data_sets(db):
    rmse = plots.metric_points(db, "rmse", ["nalisnick2019", "gal2016"])
    published = rmse[rmse["source"] == "published"]
    assert list(dict.fromkeys(published["row"])) == [
        "Dropout [Nalisnick et al. 2019] (published)", "Prob. Backprop [Nalisnick et al. 2019] (published)",
        "Deep GP [Nalisnick et al. 2019] (published)", "MC dropout [Gal & Ghahramani 2016] (published)"]
    assert set(published["dataset"]) == {"yacht", "boston"} and set(published["spread_kind"]) == {"se"}
    gal = published[(published["dataset"] == "yacht") & published["row"].str.startswith("MC dropout")]
    assert gal[["mean", "spread"]].values.tolist() == [[0.67, 0.05]]
    ours = rmse[rmse["source"] == "suite"].set_index(["dataset", "row"])
    assert ours.loc[("yacht", "A"), "mean"] == pytest.approx(1.05)
    # the sample-MAE: Nalisnick et al.'s ARD/ADD/ARD-ADD (own splits, a standard deviation), and only
    # the runs that measured it
    mae = plots.metric_points(db, "sample-mae", ["nalisnick2019", "gal2016"])
    assert set(mae.loc[mae["source"] == "suite", "row"]) == {"A"}
    pub = mae[mae["source"] == "published"]
    assert {r.split(" [")[0] for r in pub["row"]} == {"ARD", "ADD", "ARD-ADD"} and set(pub["spread_kind"]) == {"sd"}
    ll = plots.metric_points(db, "ll", ["nalisnick2019", "gal2016"])
    assert set(ll.loc[ll["source"] == "published", "row"]) == {"MC dropout [Gal & Ghahramani 2016] (published)"}
    with pytest.raises(InvalidParameterError, match="no test log-likelihood"):
        plots.metric_points(db, "ll", ["nalisnick2019"])


def test_no_run_with_the_metric_is_one_error(tmp_path):
    path = tmp_path / "old.sqlite"
    with ResultsStore(path) as store:
        store.insert([_row("yacht", 0, "Old", 1.0)])
    with pytest.raises(DataError, match="sample-MAE.*recorded before"):
        plots.plot_metric(path, tmp_path / "mae.png", "sample-mae")
    with pytest.raises(DataError, match="no successful run has a stored interval coverage"):
        plots.plot_calibration(path, tmp_path / "cal.png")
    assert not list(tmp_path.glob("*.png"))


# --------------------------------------------------------------------------- calibration
def test_coverage_curves_pool_the_counts_of_each_methods_runs(db, tmp_path):
    curves = plots.coverage_curves(db)
    assert set(curves["method"]) == {"A"}  # Old has no coverage stored
    yacht = curves[curves["dataset"] == "yacht"]
    assert yacht["level"].tolist() == LEVELS and (yacht["targets"] == 80).all() and (yacht["runs"] == 2).all()
    np.testing.assert_allclose(yacht["fraction"], np.array([4, 8, 12, 16, 20, 24, 28, 32, 36, 38, 40]) / 40)
    # counts add: a split with other counts moves the pooled fraction by its share of the targets
    with ResultsStore(db) as store:
        store.insert([_row("yacht", 2, "A", 1.2, 0.8, [0] * 11, targets=20)])
    pooled = plots.coverage_curves(db)
    assert pooled[(pooled["dataset"] == "yacht")]["fraction"].iloc[0] == pytest.approx(8 / 100)


def test_plot_command_draws_references_and_calibration(db, tmp_path, capsys):
    rmse, cal = tmp_path / "rmse.png", tmp_path / "cal.png"
    assert main(["plot", "--results", str(db), "--out", str(rmse), "--reference", "nalisnick2019,gal2016",
                 "--calibration", str(cal)]) == 0
    assert capsys.readouterr().out.splitlines() == [str(rmse), str(cal)]
    for path in (rmse, cal):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a bad second path is refused before the first figure is drawn
    assert main(["plot", "--results", str(db), "--out", str(tmp_path / "again.png"), "--calibration",
                 str(tmp_path / "cal.txt")]) == 2
    assert "'.txt' is not an image format" in _one_error_line(capsys) and not (tmp_path / "again.png").exists()
