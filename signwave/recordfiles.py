"""Payloads from JSON Lines and CSV files, for `signwave records import`.

Pure and streaming: a file is read one line at a time and its payloads are
yielded as they are parsed, so memory does not grow with the file. A bad
record raises `RecordImportError` naming the file and the line; the caller
imports inside one transaction, so nothing of a bad file is kept.

JSON Lines: one object per line, ``{"payload": "text"}`` (signed as its UTF-8
bytes) or ``{"payload_b64": "..."}`` (binary). CSV: a header row with a
``payload`` (or ``payload_b64``) column. Other fields are ignored.
"""

from __future__ import annotations

import base64
import binascii
import csv
import enum
import json
from collections.abc import Iterator
from itertools import chain
from pathlib import PurePath
from typing import BinaryIO

from signwave.errors import RecordImportError

MAX_LINE_BYTES = 32 * 1024 * 1024
TEXT, B64 = "payload", "payload_b64"
_MISSING = object()


class Format(enum.StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


EXTENSIONS = {".jsonl": Format.JSONL, ".ndjson": Format.JSONL, ".csv": Format.CSV}


def read_payloads(stream: BinaryIO, *, name: str, fmt: Format | None = None) -> Iterator[bytes]:
    """Payloads of a records file, in order; the format is guessed from ``name``'s
    extension, else from the content, unless ``fmt`` is given."""
    lines = _Lines(stream, name)
    fmt = fmt or EXTENSIONS.get(PurePath(name).suffix.lower())
    head: list[tuple[int, bytes]] = []
    if fmt is None:
        for number, raw in lines:
            head.append((number, raw))
            if raw.strip():
                fmt = _sniff(raw.lstrip(b"\xef\xbb\xbf").lstrip(), name, number)
                break
        else:
            raise RecordImportError(f"{name} is empty: no records to import")
    numbered = chain(head, lines)
    if fmt is Format.JSONL:
        payloads = _jsonl(numbered, name)
    else:
        payloads = _csv(numbered, name)
    count = 0
    for payload in payloads:
        count += 1
        yield payload
    if count == 0:
        raise RecordImportError(f"{name} has no records to import")


class _Lines:
    """Numbered physical lines (with their line ends) of a binary stream, of bounded length."""

    def __init__(self, stream: BinaryIO, name: str) -> None:
        self.stream = stream
        self.name = name
        self.number = 0

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        while True:
            try:
                raw = self.stream.readline(MAX_LINE_BYTES + 1)
            except OSError as exc:
                raise RecordImportError(
                    f"cannot read {self.name} after line {self.number}: {exc.strerror or exc}"
                ) from None
            if not raw:
                return
            self.number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise RecordImportError(
                    f"{self.name} line {self.number} is longer than "
                    f"{MAX_LINE_BYTES // (1024 * 1024)} MiB"
                )
            yield self.number, raw


def _sniff(first: bytes, name: str, number: int) -> Format:
    if first.startswith(b"{"):
        return Format.JSONL
    if first.startswith(b"["):
        raise RecordImportError(
            f"{name} line {number} starts a JSON array: signwave reads JSON Lines, one object "
            f"per line (convert with `jq -c '.[]' {name} > records.jsonl`)"
        )
    return Format.CSV


def _decode(raw: bytes, name: str, number: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordImportError(
            f"{name} line {number} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte "
            f"{exc.start + 1}): store binary payloads as payload_b64"
        ) from None
    return text.removeprefix("\ufeff") if number == 1 else text


def _jsonl(lines: Iterator[tuple[int, bytes]], name: str) -> Iterator[bytes]:
    for number, raw in lines:
        text = _decode(raw, name, number).rstrip("\r\n")
        if not text.strip():
            continue
        where = f"{name} line {number}"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordImportError(
                f"{where} is not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        except RecursionError:
            raise RecordImportError(f"{where} is not valid JSON (nested too deeply)") from None
        if not isinstance(value, dict):
            raise RecordImportError(
                f'{where} is a JSON {_json_type(value)}, not an object like {{"payload": "..."}}'
            )
        yield _payload(value.get(TEXT, _MISSING), value.get(B64, _MISSING), where)


def _payload(text: object, b64: object, where: str) -> bytes:
    if text is not _MISSING and b64 is not _MISSING:
        raise RecordImportError(f"{where} has both {TEXT} and {B64}: give one")
    if b64 is not _MISSING:
        if not isinstance(b64, str):
            raise RecordImportError(f"{where}: {B64} must be a base64 string")
        try:
            return base64.b64decode(b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise RecordImportError(f"{where}: {B64} is not valid base64") from None
    if text is _MISSING:
        raise RecordImportError(f'{where} has no "{TEXT}" field (or "{B64}" for binary payloads)')
    if not isinstance(text, str):
        raise RecordImportError(
            f"{where}: {TEXT} must be a string, got {_json_type(text)} "
            f"(use {B64} for binary payloads)"
        )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise RecordImportError(
            f"{where}: {TEXT} is not valid Unicode text (a lone surrogate escape): "
            f"use {B64} for binary payloads"
        ) from None


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    return "null" if value is None else type(value).__name__


def _csv(lines: Iterator[tuple[int, bytes]], name: str) -> Iterator[bytes]:
    last = 0

    def text_lines() -> Iterator[str]:
        # The csv module pulls lines as it needs them (a quoted field may span
        # lines): remember the last one, to name it in messages.
        nonlocal last
        for number, raw in lines:
            last = number
            yield _decode(raw, name, number)

    if csv.field_size_limit() < MAX_LINE_BYTES:
        csv.field_size_limit(MAX_LINE_BYTES)
    reader = csv.reader(text_lines(), strict=True)
    header: list[str] | None = None
    column = 0
    decode_b64 = False
    while True:
        start = last + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise RecordImportError(f"{name} line {last} is not valid CSV ({exc})") from None
        if header is None:
            if row and row != [""]:
                header = [h.strip() for h in row]
                column, decode_b64 = _payload_column(header, name, start)
            continue
        if not row:
            continue
        where = f"{name} line {start}"
        if len(row) != len(header):
            raise RecordImportError(f"{where} has {len(row)} fields, the header has {len(header)}")
        if decode_b64:
            yield _payload(_MISSING, row[column], where)
        else:
            yield row[column].encode("utf-8")
    if header is None:
        raise RecordImportError(f"{name} is empty: no records to import")


def _payload_column(header: list[str], name: str, number: int) -> tuple[int, bool]:
    if TEXT in header and B64 in header:
        raise RecordImportError(
            f"{name} line {number}: the CSV header has both {TEXT} and {B64}: keep one"
        )
    for field, is_b64 in ((TEXT, False), (B64, True)):
        if header.count(field) > 1:
            raise RecordImportError(f"{name} line {number}: the CSV header repeats {field!r}")
        if field in header:
            return header.index(field), is_b64
    shown = ", ".join(repr(h) for h in header[:10])
    raise RecordImportError(
        f"{name} line {number}: the CSV header has no {TEXT!r} column (found {shown}); "
        'JSON Lines files need one {"payload": "..."} object per line'
    )
