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
        # Without standalone mode, click returns the code of `ctx.exit(n)` /
        # `Exit(n)` instead of raising it: `verify` and `run` fail that way.
        code = cli.main(standalone_mode=False, prog_name="signwave")
    except SignwaveError as exc:
        click.echo(f"signwave: error: {exc.message}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("signwave: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"signwave: error: {one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("signwave: interrupted", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)


def one_line(exc: click.ClickException) -> str:
    """Click's message without its usage block, on one line, with where to look for help."""
    message = " ".join(part.strip() for part in exc.format_message().splitlines() if part.strip())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += f" (see `{ctx.command_path} --help`)"
    return message


__all__ = ["cli", "main"]
