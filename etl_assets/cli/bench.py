"""`etl-assets bench`: the benchmarks, where the project is installed for development.

They are the repository's top-level `benchmarks` package, not part of the product: the wheel holds
etl_assets/ alone. An editable install (`make bench`, `make install`) runs etl_assets/ from the
repository, so the benchmarks are found beside it, whatever the working directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from etl_assets.cli.common import Command
from etl_assets.cli.progress import Progress
from etl_assets.environment import ConfigurationError

NOT_INSTALLED = ("the benchmarks are not part of the installed package: run them from the repository, "
                 "installed for development, with `make bench`")


def benchmarks_main():
    """`benchmarks.run.main` from the repository that holds this etl_assets/; ConfigurationError where
    there is none (an installed wheel)."""
    root = Path(__file__).resolve().parents[2]  # etl_assets/cli/bench.py -> the repository's root
    if (root / "benchmarks" / "run.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        from benchmarks.run import main
    except ModuleNotFoundError as missing:
        if missing.name not in ("benchmarks", "benchmarks.run"):
            raise  # a module the benchmarks need: its own error
        raise ConfigurationError(NOT_INSTALLED) from None
    return main


@click.command("bench", cls=Command, context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                                       "help_option_names": []}, add_help_option=False)
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def bench(arguments: tuple[str, ...]) -> int:
    """Run the benchmarks (`bench --help`: their options).

    Load, sensor, catalog, folder-run and encoding benchmarks; results under benchmarks/results/.
    Only where the project is installed for development (`make bench`).
    """
    bench_main = benchmarks_main()
    try:
        with Progress("bench", "steps", follow_output=True):
            return bench_main(list(arguments))
    except SystemExit as exit_:  # its own --help, or its usage error (argparse's message is above)
        return exit_.code if isinstance(exit_.code, int) else 2
