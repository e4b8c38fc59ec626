"""Regenerate the README's picture, ``docs/prior_predictive.png``, from notebook 01.

    python notebooks/make_figures.py            # full budget (a few minutes on a CPU)
    python notebooks/make_figures.py --small    # quick, for a look

It executes ``01_noise_models_as_priors.ipynb`` top to bottom in a kernel of this
interpreter, in a temporary folder, with ``BNN_PRIORS_FIGURE_DIR`` pointing at the
output folder: the notebook's prior predictive cell then saves its figure there.
The notebook file itself is left as it is (clean, no outputs). Needs nbclient and
ipykernel (``pip install -e ".[test]"``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOTEBOOK = HERE / "01_noise_models_as_priors.ipynb"
FIGURE = "prior_predictive.png"
KERNEL = "bnn-priors-figures"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs", help="folder of the figure (default: docs/)")
    parser.add_argument("--small", action="store_true", help="the notebook's small budget (fewer prior functions)")
    args = parser.parse_args(argv)

    import nbformat
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["BNN_PRIORS_FIGURE_DIR"] = str(out)
    os.environ["BNN_PRIORS_NOTEBOOK_BUDGET"] = "small" if args.small else "full"
    os.environ.pop("MPLBACKEND", None)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        write_kernel_spec(Path(tmp) / "kernels" / KERNEL)  # runs sys.executable -m ipykernel_launcher
        km = AsyncKernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[f"{tmp}/kernels"]))
        start = time.perf_counter()
        NotebookClient(nb, km=km, timeout=1200, resources={"metadata": {"path": tmp}}).execute()
    path = out / FIGURE
    if not path.is_file():
        print(f"the notebook did not write {path}", file=sys.stderr)
        return 1
    print(f"{path} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
