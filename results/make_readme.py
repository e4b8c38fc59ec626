"""Regenerate results/README.md and the CSV exports from the results databases in this folder.

    python results/make_readme.py
"""

from __future__ import annotations

from pathlib import Path

from bnn_priors.suite import protocol_table, read_results, results_table

HERE = Path(__file__).resolve().parent
NALISNICK = HERE / "nalisnick2019.sqlite"
GAL = HERE / "gal2016.sqlite"
GAL_GRID_RUNS = 12 * 20  # 4 dropout rates x 3 tau values x 20 splits (the five small sets)


def main() -> None:
    for db in (NALISNICK, GAL):
        read_results(db).drop(columns=["weights"], errors="ignore").to_csv(db.with_suffix(".csv"), index=False)
    gal = read_results(GAL)
    sections = [
        (HERE / "README.head.md").read_text(),
        "## Nalisnick et al. (2019) grid: test RMSE\n",
        "Command: `bnn-priors bench --preset nalisnick2019 --datasets yacht,boston,energy,concrete,wine "
        "--data-dir ../shared/data/uci --results results/nalisnick2019.sqlite`\n",
        results_table(NALISNICK, "rmse", references=["nalisnick2019"]),
        "\n## Nalisnick et al. (2019) grid: test log-likelihood\n",
        results_table(NALISNICK, "ll"),
    ]
    for epochs in sorted(gal["budget"].unique()):
        runs = gal[gal["budget"] == epochs]
        # Only data sets whose whole (p, tau) grid ran on every split: a partial grid would select from less.
        counts = runs.groupby("dataset")["config_hash"].nunique()
        complete = [d for d, n in counts.items() if n == GAL_GRID_RUNS]
        sections += [
            f"\n## Gal & Ghahramani (2016) grid-search protocol, {epochs} epochs\n",
            f"Command: `bnn-priors bench --preset gal2016 --datasets {','.join(complete)} --epochs {epochs} "
            "--data-dir ../shared/data/uci --results results/gal2016.sqlite`, then "
            "`bnn-priors table --protocol gal2016 --results results/gal2016.sqlite`\n",
            protocol_table(runs[runs["dataset"].isin(complete)], "gal2016"),
        ]
    sections.append((HERE / "README.tail.md").read_text())
    (HERE / "README.md").write_text("\n".join(sections))


if __name__ == "__main__":
    main()
