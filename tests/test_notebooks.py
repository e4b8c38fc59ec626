"""The notebooks in ``notebooks/`` run top to bottom and compute what they say.

Each notebook is executed with nbclient at the small budget
(``BNN_PRIORS_NOTEBOOK_BUDGET=small``) in a kernel of the interpreter running the
tests (a kernelspec written into a temporary folder points at ``sys.executable``,
so the test never picks up another environment's ``python3`` kernel), with a
temporary working directory and every file it writes (results database, figures)
in that directory. A probe cell appended to the in-memory copy (the file on disk
is never touched) prints the notebook's own results as JSON, and the tests check
those numbers: the statistical checks of notebook 01, that every inference method
of notebook 02 beats a constant predictor, the benchmark table of notebook 03.

The notebooks are stored clean (no outputs, no execution counts); a test checks
that too.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
KERNEL = "bnn-priors-tests"
CELL_TIMEOUT = 240  # seconds per cell; the small budget needs a few


@pytest.fixture(scope="session")
def kernel_dirs(tmp_path_factory) -> list[str]:
    """A folder with one kernelspec, ``KERNEL``, that runs ``sys.executable -m ipykernel_launcher``."""
    root = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(root / KERNEL)
    spec = json.loads((root / KERNEL / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    return [str(root)]


@pytest.fixture
def notebook_env(monkeypatch, isolated_data):
    """The environment the kernel inherits: small budget, nothing written or fetched outside ``tmp_path``."""
    tmp_path = isolated_data
    monkeypatch.setenv("BNN_PRIORS_NOTEBOOK_BUDGET", "small")
    monkeypatch.setenv("BNN_PRIORS_RESULTS", str(tmp_path / "results.sqlite"))
    monkeypatch.delenv("BNN_PRIORS_FIGURE_DIR", raising=False)  # notebook 01 would save the README figure
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend makes the figures outputs
    return tmp_path


def execute(name: str, probe: str, kernel_dirs: list[str], cwd: Path) -> tuple[nbformat.NotebookNode, dict]:
    """Run notebook ``name`` with ``probe`` appended as a last cell; return it and the JSON the probe printed."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=kernel_dirs))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(cwd)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, if a cell fails
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("name") == "stdout")
    return nb, json.loads(text.strip().splitlines()[-1])


def images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for cell in nb.cells for o in cell.get("outputs", []))


def finite(x) -> bool:
    return x is not None and math.isfinite(x)


# ------------------------------------------------------------------------ stored clean
def test_notebooks_are_stored_clean():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    names = [p.name for p in paths]
    for expected in ("01_noise_models_as_priors.ipynb", "02_swap_inference.ipynb", "03_uci_benchmark.ipynb"):
        assert expected in names
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            where = f"{path.name}, cell {i}"
            assert cell.outputs == [], f"{where} has stored outputs: strip them before committing"
            assert cell.execution_count is None, f"{where} has an execution count"
            assert "execution" not in cell.metadata, f"{where} has execution timing metadata"


# ------------------------------------------------------------------------ 01
PROBE_01 = """
import json
print(json.dumps({
    "checks": checks.reset_index().to_dict("records"),
    "sharing": sharing.reset_index().to_dict("records"),
    "spread": spread.reset_index().to_dict("records"),
    "table": list(table.index),
}))
"""


def test_01_noise_models_as_priors(kernel_dirs, notebook_env):
    nb, out = execute("01_noise_models_as_priors.ipynb", PROBE_01, kernel_dirs, notebook_env)
    assert images(nb) >= 3  # noise/variance/weight histograms, heat maps, prior predictive functions
    assert out["table"] == ["bernoulli", "gaussian", "rayleigh", "inverse-nakagami", "half-cauchy"]

    checks = {row["noise"]: row for row in out["checks"]}
    p_values = {
        (noise, key): value
        for noise, row in checks.items()
        for key, value in row.items()
        if " p" in key and finite(value)
    }
    # Closed forms tested: the Laplace and Student-t marginals and the spike-and-slab's slab and spike,
    # the exponential and inverse-gamma variance priors, and hierarchical == expanded for all five.
    assert {n for n, k in p_values if k == "KS p: w vs closed form"} == {"bernoulli", "rayleigh", "inverse-nakagami"}
    assert {n for n, k in p_values if k == "KS p: λ² vs closed form"} == {"rayleigh", "inverse-nakagami"}
    assert {n for n, k in p_values if k == "binomial p: spike mass"} == {"bernoulli"}
    assert {n for n, k in p_values if k == "KS p: hierarchical vs expanded"} == set(checks)
    failed = {key: p for key, p in p_values.items() if p < 1e-3}
    assert not failed, f"samples disagree with the closed forms: {failed}"
    # Second moments where the sample mean of lambda^2 has a finite variance; none for the half-Cauchy.
    for noise in ("bernoulli", "gaussian", "rayleigh"):
        row = checks[noise]
        assert row["E[λ²] sampled"] == pytest.approx(row["E[λ²] exact"], rel=0.05)
        assert row["Var(w) sampled"] == pytest.approx(row["E[λ²] exact"], rel=0.05)
    assert checks["half-cauchy"]["E[λ²] exact"] == math.inf

    sharing = {row["structure"]: row for row in out["sharing"]}
    assert set(sharing) == {"none", "ard", "add", "ard-add"}
    # ARD makes rows differ, ADD whole matrices; one scale per weight does neither.
    assert sharing["ard"]["sd between rows"] > 2 * sharing["none"]["sd between rows"]
    assert sharing["add"]["sd between matrices"] > 2 * sharing["none"]["sd between matrices"]
    assert sharing["ard-add"]["sd between rows"] > 2 * sharing["none"]["sd between rows"]
    assert sharing["ard-add"]["sd between matrices"] > 2 * sharing["none"]["sd between matrices"]

    spread = {row["prior"]: row for row in out["spread"]}
    assert set(spread) == {"normal", *checks}
    assert all(finite(row["90% band width at x=0"]) and row["90% band width at x=0"] > 0 for row in spread.values())
    # The horseshoe believes in far larger functions than the Gaussian prior does.
    assert spread["half-cauchy"]["90% band width at x=0"] > 5 * spread["normal"]["90% band width at x=0"]


# ------------------------------------------------------------------------ 02
PROBE_02 = """
import json
print(json.dumps({"summary": summary.reset_index().to_dict("records"), "diagnostics": list(diagnostics.columns)}))
"""


def test_02_swap_inference(kernel_dirs, notebook_env):
    nb, out = execute("02_swap_inference.ipynb", PROBE_02, kernel_dirs, notebook_env)
    assert images(nb) >= 2  # the data, the six predictive bands
    rows = {row["method"]: row for row in out["summary"]}
    constant = rows.pop("constant predictor (training mean)")
    assert len(rows) == 6 and {"NUTS", "MC dropout", "SVI mean-field"} <= set(rows)
    for method, row in rows.items():
        assert finite(row["test RMSE"]) and finite(row["test log-lik."]), method
        assert row["test RMSE"] < constant["test RMSE"], f"{method} does not beat the constant predictor"
        assert row["wall time (s)"] > 0 and row["mean std, data"] > 0, method
    assert {"site", "r_hat_max", "ess_bulk_min", "divergences"} <= set(out["diagnostics"])


# ------------------------------------------------------------------------ 03
PROBE_03 = """
import json
print(json.dumps({"tidy": tidy.to_dict("records"), "runs": len(runs), "grid": len(configs),
                  "failed": len(report.failed), "splits": sorted(set(runs["split"])),
                  "plot": str(rmse_png)}))
"""


def test_03_uci_benchmark(kernel_dirs, notebook_env, uci_dir, monkeypatch):
    monkeypatch.setenv("BNN_PRIORS_DATA", str(uci_dir))
    nb, out = execute("03_uci_benchmark.ipynb", PROBE_03, kernel_dirs, notebook_env)
    assert images(nb) >= 2  # the notebook's RMSE plot and the one `bnn-priors plot` draws
    assert out["failed"] == 0 and out["runs"] == out["grid"] > 0
    plot = Path(out["plot"])
    assert plot.is_file() and plot.parent == notebook_env  # written beside the results, not into the repo
    assert (notebook_env / "results.sqlite").is_file()

    suite = [row for row in out["tidy"] if row["source"] == "suite"]
    published = [row for row in out["tidy"] if row["source"] == "published"]
    assert {row["dataset"] for row in suite} == {"yacht", "boston"}
    assert {row["dataset"] for row in published} == {"yacht", "boston"}
    methods = {row["method"] for row in suite}
    assert len(methods) == 10 and any(m.startswith("MC dropout") for m in methods)
    assert sum("MAP-EM" in m for m in methods) == 3
    for row in suite:
        assert row["n"] == len(out["splits"]) and finite(row["mean"]) and row["mean"] > 0, row
    # Most methods beat the constant predictor (RMSE about the standard deviation of the target).
    from bnn_priors.data import load_dataset

    for dataset in ("yacht", "boston"):
        y_std = float(load_dataset(dataset, data_dir=uci_dir).y.std())
        rmse = sorted(row["mean"] for row in suite if row["dataset"] == dataset)
        assert rmse[len(rmse) // 2] < y_std, (dataset, rmse, y_std)
