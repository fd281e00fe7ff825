"""`signwave keys ...`, `signwave records import` and `signwave export signatures`.

Thin: parsing lives in `signwave.keyfiles` and `signwave.recordfiles`, SQL in
`signwave.store.io`. Files are written to a temporary name and renamed when
complete, so a failed export leaves no half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from signwave import keycrypt
from signwave.errors import ConfigError, InputError, RecordImportError
from signwave.keyfiles import read_key_files, split_duplicates
from signwave.recordfiles import Format, read_payloads
from signwave.store import Database, Store
from signwave.store import io as store_io

if TYPE_CHECKING:
    from signwave.cli.commands import AppContext

READ_BUFFER = 1024 * 1024


def _cipher(app: AppContext) -> keycrypt.KeyCipher:
    return keycrypt.KeyCipher(app.settings.key_encryption_key)


# -- keys ------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """Import, list and export signing keys; encrypt them at rest."""


@keys.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.pass_obj
def keys_import(app: AppContext, files: tuple[Path, ...]) -> None:
    """Import PEM RSA private keys (PKCS#1 or PKCS#8, at least 2048 bits).

    A FILE may hold several keys. All or nothing: if any key of any FILE is
    bad, none is imported. A key already present (same fingerprint) is
    reported and skipped. Refused while a run is in progress.
    """
    parsed = read_key_files(files)
    unique, repeats = split_duplicates(parsed)
    cipher = _cipher(app)
    db = app.database()
    store = Store(db, cipher=cipher)
    # New keys must be sealed like the stored ones, or workers could open only some.
    store_io.check_key_encryption(db, cipher)
    store.refuse_if_running()
    new_ids, present = store.add_keys([k.material for k in unique])
    already = set(present)
    ids = iter(new_ids)
    for key in unique:
        fp = key.material.fingerprint
        if fp in already:
            click.echo(f"skipped {key.source}: already imported (fingerprint {fp[:16]}…)", err=True)
        else:
            click.echo(
                f"key {next(ids)}: {key.source} ({key.material.bits} bits, fingerprint {fp[:16]}…)"
            )
    for repeat, first in repeats:
        click.echo(f"skipped {repeat.source}: same key as {first.source}", err=True)
    skipped = len(present) + len(repeats)
    click.echo(
        f"imported {len(new_ids)} key{'s' if len(new_ids) != 1 else ''}"
        + (f", skipped {skipped} duplicate{'s' if skipped != 1 else ''}" if skipped else "")
        + (" (encrypted at rest)" if cipher.encrypts else "")
    )


@keys.command("list")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="SIGNWAVE_KEYS_LIST_JSON",
    show_envvar=True,
    help="Machine-readable output.",
)
@click.pass_obj
def keys_list(app: AppContext, as_json: bool) -> None:
    """Id, fingerprint, bits, use count, last use and lease of every key."""
    infos = store_io.list_keys(app.database())
    if as_json:
        click.echo(json.dumps([k.as_dict() for k in infos]))
        return
    click.echo(
        f"{'id':>6}  {'fingerprint (SHA-256 of the public key)':<64}  {'bits':>5}  {'uses':>6}  "
        f"{'last used (UTC)':<19}  {'leased':<6}  encrypted"
    )
    for k in infos:
        last = k.last_used_at.strftime("%Y-%m-%d %H:%M:%S") if k.last_used_at else "never"
        click.echo(
            f"{k.id:>6}  {k.fingerprint:<64}  {k.bits:>5}  {k.use_count:>6}  {last:<19}  "
            f"{'yes' if k.leased else 'no':<6}  {'yes' if k.encrypted else 'no'}"
        )
    click.echo(f"{len(infos)} keys, {sum(k.leased for k in infos)} leased now")


@keys.command("export-public")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.pass_obj
def keys_export_public(app: AppContext, directory: Path) -> None:
    """Write DIRECTORY/<key_id>.pem (SubjectPublicKeyInfo PEM) for every key."""
    db = app.database()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {directory}: {exc.strerror or exc}") from None
    count = 0
    for key_id, pem in store_io.iter_public_keys(db):
        with _atomic(directory / f"{key_id}.pem", mode=0o644) as out:
            out.write(pem.encode("ascii"))
        count += 1
    click.echo(f"wrote {count} public keys to {directory}")


def _fernet_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return keycrypt.check_key(value, variable="--new-key")
    except ConfigError as exc:
        raise click.BadParameter(exc.message, ctx, param) from None


@keys.command("rotate-encryption")
@click.option(
    "--new-key",
    envvar="SIGNWAVE_NEW_KEY_ENCRYPTION_KEY",
    show_envvar=True,
    required=True,
    callback=_fernet_option,
    help="Fernet key to encrypt every private key with (prefer the variable: flags show in ps).",
)
@click.pass_obj
def keys_rotate_encryption(app: AppContext, new_key: str) -> None:
    """Re-encrypt every private key with a new key, all or nothing.

    The current key is SIGNWAVE_KEY_ENCRYPTION_KEY; leave it unset to encrypt
    keys stored in plaintext. Refused while a run is in progress: stop the
    workers, rotate, then restart them with SIGNWAVE_KEY_ENCRYPTION_KEY set to
    the new key.
    """
    db = app.database()
    count = store_io.reseal_private_keys(
        db, _cipher(app), keycrypt.KeyCipher(new_key, variable="--new-key")
    )
    click.echo(
        f"re-encrypted {count} private keys: from now on set SIGNWAVE_KEY_ENCRYPTION_KEY "
        "to the new key for every worker and command"
    )


@keys.command("generate-encryption-key")
def keys_generate_encryption_key() -> None:
    """Print a new random key for SIGNWAVE_KEY_ENCRYPTION_KEY."""
    click.echo(keycrypt.new_key())


# -- records ---------------------------------------------------------------------


@click.group()
def records() -> None:
    """Import records to sign."""


@records.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", *[f.value for f in Format]]),
    default="auto",
    envvar="SIGNWAVE_RECORDS_IMPORT_FORMAT",
    show_envvar=True,
    help="File format; auto: by extension (.jsonl, .ndjson, .csv), else by content.",
)
@click.pass_obj
def records_import(app: AppContext, file: Path, fmt: str) -> None:
    """Import payloads from JSON Lines or CSV, all or nothing.

    JSON Lines: one {"payload": "text"} or {"payload_b64": "..."} object per
    line. CSV: a header with a payload (or payload_b64) column. Text is
    signed as its UTF-8 bytes. Refused while a run is in progress.
    """
    db = app.database()
    try:
        stream = file.open("rb", buffering=READ_BUFFER)
    except OSError as exc:
        raise RecordImportError(f"cannot read {file}: {exc.strerror or exc}") from None
    with stream:
        payloads = read_payloads(stream, name=str(file), fmt=None if fmt == "auto" else Format(fmt))
        count = store_io.import_records(db, payloads)
    click.echo(f"imported {count} records from {file}")


# -- export ----------------------------------------------------------------------


@click.group()
def export() -> None:
    """Export signatures."""


@export.command("signatures")
@click.argument("file")
@click.pass_obj
def export_signatures(app: AppContext, file: str) -> None:
    """Write every signature as JSON Lines to FILE (- for standard output).

    Fields: record_id, key_id, batch_id, payload_b64, signature_b64, signed_at
    (ISO 8601, UTC, microseconds).
    """
    db = app.database()
    if file == "-":
        try:
            count = _write_signatures(db, sys.stdout.buffer)
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader went away (`| head`): not an error of ours.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(1) from None
        click.echo(f"exported {count} signatures", err=True)
        return
    with _atomic(Path(file), mode=0o600) as out:
        count = _write_signatures(db, out)
    click.echo(f"exported {count} signatures to {file}")


def _write_signatures(db: Database, out: IO[bytes]) -> int:
    count = 0
    for row in store_io.iter_signatures(db):
        line = json.dumps(
            {
                "record_id": row.record_id,
                "key_id": row.key_id,
                "batch_id": row.batch_id,
                "payload_b64": b64encode(row.payload).decode("ascii"),
                "signature_b64": b64encode(row.signature).decode("ascii"),
                "signed_at": row.signed_at_iso,
            },
            separators=(",", ":"),
        )
        out.write(line.encode("ascii") + b"\n")
        count += 1
    return count


@contextlib.contextmanager
def _atomic(path: Path, *, mode: int) -> Iterator[IO[bytes]]:
    """A file that appears at ``path`` complete, or not at all."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise
