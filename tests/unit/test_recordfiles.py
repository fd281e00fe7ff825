"""Records files for `signwave records import`: JSON Lines and CSV, streamed, bad lines named."""

from __future__ import annotations

import base64
import csv
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signwave.errors import RecordImportError
from signwave.recordfiles import Format, read_payloads


def payloads(data: bytes, name: str = "r.jsonl", fmt: Format | None = None) -> list[bytes]:
    return list(read_payloads(io.BytesIO(data), name=name, fmt=fmt))


def error(data: bytes, name: str = "r.jsonl", fmt: Format | None = None) -> str:
    with pytest.raises(RecordImportError) as caught:
        payloads(data, name, fmt)
    message = caught.value.message
    assert "\n" not in message
    assert name in message
    return message


def jsonl(values: list[object], *, newline: str = "\n") -> bytes:
    return "".join(json.dumps(v) + newline for v in values).encode()


def csv_bytes(rows: list[list[str]]) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


# -- formats ---------------------------------------------------------------------------------


def test_jsonl_text_and_binary_payloads() -> None:
    data = b'{"payload": "h\\u00e9llo"}\n\n{"payload_b64": "AAH/"}\r\n{"payload": ""}'

    assert payloads(data) == ["héllo".encode(), b"\x00\x01\xff", b""]


def test_csv_payload_column_among_others_and_multiline_fields() -> None:
    data = b'id,payload,note\r\n1,"a,b",x\r\n2,"two\nlines",y\r\n\r\n3,\xc3\xa9,z\r\n'

    assert payloads(data, "r.csv") == [b"a,b", b"two\nlines", "é".encode()]


def test_csv_payload_b64_column() -> None:
    assert payloads(b"payload_b64\nAAE=\n", "r.csv") == [b"\x00\x01"]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("r.ndjson", b'{"payload": "x"}\n', [b"x"]),
        ("records.txt", b'\n  {"payload": "x"}\n', [b"x"]),
        ("records", b"payload\nx\n", [b"x"]),
        ("R.CSV", b"payload\nx\n", [b"x"]),
        ("bom.csv", b"\xef\xbb\xbfpayload\nx\n", [b"x"]),
        ("bom.txt", b'\xef\xbb\xbf{"payload": "x"}\n', [b"x"]),
    ],
)
def test_format_from_extension_else_content(name: str, data: bytes, expected: list[bytes]) -> None:
    assert payloads(data, name) == expected


def test_an_explicit_format_wins_over_the_extension() -> None:
    assert payloads(b"payload\nx\n", "r.jsonl", Format.CSV) == [b"x"]


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("r.jsonl", b"", ("no records",)),
        ("r.txt", b"", ("empty",)),
        ("r.txt", b"\n \n\n", ("empty",)),
        ("r.csv", b"", ("empty",)),
        ("r.csv", b"payload\n", ("no records",)),
        ("r.jsonl", b'{"payload": "a"}\n[1, 2]\n', ("line 2", "JSON array", "object")),
        ("r.jsonl", b'{"payload": "a"}\n"text"\n', ("line 2", "string")),
        ("r.jsonl", b'{"payload": "a"}\n\n{"data": "b"}\n', ("line 3", '"payload"')),
        ("r.jsonl", b'{"payload": 1}\n', ("line 1", "must be a string")),
        ("r.jsonl", b'{"payload": "a", "payload_b64": "YQ=="}\n', ("line 1", "both")),
        ("r.jsonl", b'{"payload_b64": "not base64!"}\n', ("line 1", "base64")),
        ("r.jsonl", b'{"payload": "\\ud800"}\n', ("line 1", "Unicode")),
        ("r.jsonl", b'{"payload": "a"\n', ("line 1", "not valid JSON")),
        ("r.jsonl", b'{"payload": "a"}\n{"payload": "\xff"}\n', ("line 2", "UTF-8")),
        ("r.txt", b'[{"payload": "a"}]\n', ("line 1", "JSON array", "jq")),
        ("r.csv", b"id,data\n1,x\n", ("line 1", "no 'payload' column", "'id', 'data'")),
        ("r.txt", b"hello world\n", ("no 'payload' column",)),
        ("r.csv", b"payload,payload\nx,y\n", ("repeats",)),
        ("r.csv", b"payload,payload_b64\nx,y\n", ("both",)),
        ("r.csv", b"id,payload\n1,a\n2,b,c\n", ("line 3", "3 fields", "header has 2")),
        ("r.csv", b'payload\na\n"unterminated\n', ("line 3", "not valid CSV")),
        ("r.csv", b"payload\na\n\xff\xfe\n", ("line 3", "UTF-8")),
        ("r.csv", b"payload_b64\nAAE=\n!!\n", ("line 3", "base64")),
    ],
)
def test_bad_files_name_the_line_and_the_problem(
    name: str, data: bytes, words: tuple[str, ...]
) -> None:
    message = error(data, name)
    for word in words:
        assert word in message, message


def test_a_line_in_a_multiline_csv_file_is_counted_physically() -> None:
    data = b'payload\n"one\ntwo\nthree"\nfine\n"a"b\n'

    assert "line 6" in error(data, "r.csv")


def test_a_deeply_nested_line_is_an_error_not_a_crash() -> None:
    assert "not valid JSON" in error(b"[" * 100_000 + b"\n")


class _CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.served = 0

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.served += len(line)
        return line


@pytest.mark.parametrize("name", ["r.jsonl", "r.csv", "r.txt"])
def test_files_are_streamed_not_read_whole(name: str) -> None:
    if name.endswith(".csv"):
        data = csv_bytes([["payload"]] + [[f"p{i}"] for i in range(10_000)])
    else:
        data = jsonl([{"payload": f"p{i}"} for i in range(10_000)])
    stream = _CountingStream(data)

    it = read_payloads(stream, name=name)
    first = next(it)

    assert first == b"p0"
    assert stream.served < 200, "the first payload came before the rest of the file was read"
    assert sum(1 for _ in it) == 9_999


# -- properties ------------------------------------------------------------------------------


@given(texts=st.lists(st.text(), min_size=1, max_size=20), crlf=st.booleans())
def test_jsonl_text_round_trip(texts: list[str], crlf: bool) -> None:
    data = jsonl([{"payload": t} for t in texts], newline="\r\n" if crlf else "\n")

    assert payloads(data) == [t.encode() for t in texts]


@given(blobs=st.lists(st.binary(), min_size=1, max_size=20))
def test_jsonl_binary_round_trip(blobs: list[bytes]) -> None:
    data = jsonl(
        [{"payload_b64": base64.b64encode(b).decode(), "id": i} for i, b in enumerate(blobs)]
    )

    assert payloads(data) == blobs


@given(
    texts=st.lists(
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00")), min_size=1
    ),
    extra=st.lists(
        st.text(min_size=1, max_size=5).filter(
            lambda s: s.strip() not in ("payload", "payload_b64")
        ),
        max_size=3,
        unique=True,
    ),
    position=st.integers(min_value=0, max_value=3),
)
def test_csv_round_trip(texts: list[str], extra: list[str], position: int) -> None:
    header = list(extra)
    position = min(position, len(header))
    header.insert(position, "payload")
    rows = [header]
    for t in texts:
        row = ["x"] * len(extra)
        row.insert(position, t)
        rows.append(row)

    assert payloads(csv_bytes(rows), "r.csv") == [t.encode() for t in texts]


@given(data=st.binary(max_size=2000), name=st.sampled_from(["r.jsonl", "r.csv", "r.txt"]))
@settings(max_examples=500)
def test_arbitrary_bytes_give_payloads_or_a_one_line_error(data: bytes, name: str) -> None:
    try:
        result = payloads(data, name)
    except RecordImportError as exc:
        assert "\n" not in exc.message
        assert name in exc.message
        return
    assert all(isinstance(p, bytes) for p in result)
    assert result, "a file without records is an error"


@given(
    good=st.lists(st.text(max_size=20), min_size=1, max_size=30),
    bad_at=st.integers(min_value=0),
    bad=st.sampled_from(["[]", '{"x": 1}', "{", '{"payload": null}', "42"]),
)
def test_the_first_bad_line_is_the_one_named(good: list[str], bad_at: int, bad: str) -> None:
    lines = [json.dumps({"payload": t}) for t in good]
    at = bad_at % (len(lines) + 1)
    lines.insert(at, bad)

    message = error(("\n".join(lines) + "\n").encode())

    assert f"line {at + 1} " in message or f"line {at + 1}:" in message
