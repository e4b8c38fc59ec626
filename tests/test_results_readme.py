"""results/make_readme.py: the paragraph that names splits far from the rest of their cell."""

import importlib.util
import json
from pathlib import Path

import pandas as pd

_spec = importlib.util.spec_from_file_location(
    "make_readme", Path(__file__).resolve().parents[1] / "results" / "make_readme.py")
make_readme = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_readme)


def _cell(dataset, structure, maes, train):
    return pd.DataFrame({
        "dataset": dataset, "structure": structure, "split": range(len(maes)), "sample_mae": maes,
        "backend_info": [json.dumps({"train_rmse_standardized": t}) for t in train],
    })


def test_a_split_far_above_its_cell_is_named_with_its_training_fit():
    maes = [3.3, 3.4, 3.5, 3.45, 3.35, 3.42, 6.7]
    train = [0.25, 0.26, 0.24, 0.25, 0.25, 0.26, 0.46]
    runs = pd.concat([_cell("power", "ard", maes, train), _cell("yacht", "add", [0.7, 0.8, 0.75, 0.72], [0.04] * 4)])
    text = make_readme._far_splits(runs, [("power", "ard"), ("yacht", "add")])
    assert "power ARD split 6: 6.7 against the cell's median 3.42" in text
    assert "train RMSE 0.460 against the cell's median 0.250" in text
    assert "yacht" not in text and "split 5" not in text


def test_no_paragraph_when_every_split_is_near_its_cell():
    runs = _cell("wine", "ard-add", [0.55, 0.56, 0.54, 0.58, 0.6], [0.5] * 5)
    assert make_readme._far_splits(runs, [("wine", "ard-add")]) == ""
