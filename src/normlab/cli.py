"""The ``normlab`` command line. Subcommands are added by the lab (run/list/report/show) and bench."""

from __future__ import annotations

import typer

from normlab import __version__

app = typer.Typer(
    name="normlab",
    help="normlab: normalization layers, training instruments, and a lab that tests the classic claims.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"normlab {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """normlab: normalization layers, training instruments, and a lab that tests the classic claims."""


if __name__ == "__main__":
    app()
