"""PEM private keys for `signwave keys import`: what is accepted, and every way to be refused."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signwave.errors import KeyImportError
from signwave.keyfiles import parse_keys, read_key_files, split_duplicates
from signwave.signing import KeyMaterial, load_public_key
from tests.pemfiles import BAD, make_pem_files, pem_body, slices


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pem_files(tmp_path_factory.mktemp("pem"))


def _openssl_fingerprint(path: Path) -> str:
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("name", ["pkcs8", "pkcs1"])
def test_openssl_keys_are_accepted_with_openssls_fingerprint(
    pem_files: dict[str, Path], name: str
) -> None:
    [key] = read_key_files([pem_files[name]])

    assert key.source == f"{pem_files[name]} block 1"
    assert key.material.bits == 2048
    assert key.material.fingerprint == _openssl_fingerprint(pem_files[name])
    # Stored normalised as PKCS#8, whatever the input format.
    assert key.material.private_key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_several_keys_per_file_with_text_between(pem_files: dict[str, Path]) -> None:
    keys = read_key_files([pem_files["two_keys"]])

    assert [k.source.rsplit(" ", 2)[1:] for k in keys] == [["block", "1"], ["block", "2"]]
    assert [k.material.fingerprint for k in keys] == [
        _openssl_fingerprint(pem_files["pkcs8"]),
        _openssl_fingerprint(pem_files["pkcs1"]),
    ]


def test_pkcs1_and_pkcs8_of_one_key_are_the_same_key(
    pem_files: dict[str, Path], tmp_path: Path
) -> None:
    converted = tmp_path / "as_pkcs1.pem"
    subprocess.run(
        ["openssl", "rsa", "-in", str(pem_files["pkcs8"]), "-traditional", "-out", str(converted)],
        check=True,
        capture_output=True,
    )
    assert converted.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")

    [a] = read_key_files([pem_files["pkcs8"]])
    [b] = read_key_files([converted])

    assert a.material.fingerprint == b.material.fingerprint


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_are_refused_with_the_file_block_and_reason(
    pem_files: dict[str, Path], name: str
) -> None:
    path = pem_files[name]

    with pytest.raises(KeyImportError) as caught:
        read_key_files([pem_files["pkcs8"], path])

    message = caught.value.message
    assert "\n" not in message
    assert message.startswith(str(path))
    for word in BAD[name]:
        assert word in message, message


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyImportError, match=r"cannot read .*missing\.pem"):
        read_key_files([tmp_path / "missing.pem"])
    with pytest.raises(KeyImportError, match="cannot read"):
        read_key_files([tmp_path])


def test_errors_never_quote_key_material(pem_files: dict[str, Path]) -> None:
    for name in ("malformed", "truncated", "encrypted_pkcs1", "rsa_1024", "ec"):
        content = pem_files[name].read_bytes()
        with pytest.raises(KeyImportError) as caught:
            parse_keys(content, name="k.pem")
        body = pem_body(content)
        shown = f"{caught.value.message} {caught.value!r}"
        assert not any(s in shown for s in slices(body, 16)), name


def test_duplicates_are_split_from_first_occurrences(pem_files: dict[str, Path]) -> None:
    keys = read_key_files([pem_files["two_keys"], pem_files["pkcs8"], pem_files["pkcs1"]])

    unique, repeats = split_duplicates(keys)

    assert [k.source for k in unique] == [k.source for k in keys[:2]]
    assert [(r.source, f.source) for r, f in repeats] == [
        (keys[2].source, keys[0].source),
        (keys[3].source, keys[1].source),
    ]


# -- properties ------------------------------------------------------------------------------

_JUNK = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="-"), max_size=40).map(
    lambda s: s + "\n"
)


@given(
    order=st.lists(st.integers(min_value=0, max_value=1), min_size=1, max_size=4),
    junk=st.lists(_JUNK, min_size=5, max_size=5),
    crlf=st.booleans(),
)
@settings(max_examples=40, deadline=None)
def test_any_sequence_of_good_blocks_parses_in_order(
    key_pool: list[KeyMaterial], order: list[int], junk: list[str], crlf: bool
) -> None:
    pems = [key_pool[i].private_key_pem.decode() for i in order]
    text = "".join(j + p for j, p in zip(junk, pems, strict=False)) + junk[-1]
    if crlf:
        text = text.replace("\n", "\r\n")

    keys = parse_keys(text.encode(), name="k.pem")

    assert [k.material.fingerprint for k in keys] == [key_pool[i].fingerprint for i in order]
    assert [k.source for k in keys] == [f"k.pem block {n}" for n in range(1, len(order) + 1)]


@given(data=st.binary(max_size=3000))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_bytes_give_keys_or_a_one_line_import_error(data: bytes) -> None:
    try:
        parse_keys(data, name="k.pem")
    except KeyImportError as exc:
        assert "\n" not in exc.message
        assert exc.message.startswith("k.pem")


@given(position=st.integers(min_value=0), byte=st.integers(min_value=0, max_value=255))
@settings(max_examples=100, deadline=None)
def test_a_damaged_key_is_refused_or_still_the_same_key(
    key_pool: list[KeyMaterial], position: int, byte: int
) -> None:
    original = key_pool[0].private_key_pem
    i = position % len(original)
    damaged = original[:i] + bytes([byte]) + original[i + 1 :]
    try:
        keys = parse_keys(damaged, name="k.pem")
    except KeyImportError as exc:
        assert "\n" not in exc.message
        return
    # Some bytes do not matter (a whitespace change, text outside the block);
    # a key that still loads must be the original one.
    assert len(keys) == 1
    assert _numbers(keys[0].material) == _numbers(key_pool[0])


def _numbers(material: KeyMaterial) -> tuple[int, int]:
    public = load_public_key(material.public_key_pem).public_numbers()
    return public.n, public.e


@given(cut=st.integers(min_value=0))
@settings(max_examples=100, deadline=None)
def test_a_truncated_file_never_yields_a_wrong_key(key_pool: list[KeyMaterial], cut: int) -> None:
    two = key_pool[0].private_key_pem + key_pool[1].private_key_pem
    prefix = two[: cut % len(two)]
    try:
        keys = parse_keys(prefix, name="k.pem")
    except KeyImportError:
        return
    expected = [key_pool[0].fingerprint, key_pool[1].fingerprint][: len(keys)]
    assert [k.material.fingerprint for k in keys] == expected
