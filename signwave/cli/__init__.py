"""The `signwave` command line (SPEC §5)."""

from __future__ import annotations

import logging
import sys

import click

from signwave.cli.commands import cli
from signwave.errors import SignwaveError


def main() -> None:
    """Entry point: user errors are one line on stderr and a non-zero exit, never a traceback."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cli.main(standalone_mode=False, prog_name="signwave")
    except SignwaveError as exc:
        click.echo(f"signwave: error: {exc.message}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("signwave: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("signwave: interrupted", err=True)
        sys.exit(130)


__all__ = ["cli", "main"]
