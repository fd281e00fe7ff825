"""SPEC §8: key material and payloads never reach logs, task arguments or Flower; Flower
listens on localhost only and asks for credentials when SIGNWAVE_FLOWER_BASIC_AUTH is set."""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import urllib.error
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import text

from signwave.settings import Settings
from signwave.store import Database
from signwave.store.status import read_progress
from tests.pemfiles import openssl, pem_body, slices
from tests.support import (
    SIGN_SUCCEEDED,
    CeleryProcess,
    assert_all_signed_once,
    cli,
    running,
    wait_until,
)

RECORDS = 60
AUTH = ("admin", "flower-" + secrets.token_hex(8))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def flower(settings: Settings, log: Path, port: int, **env: str) -> CeleryProcess:
    # No --address, and started outside the project directory: the app decides,
    # as for a plain `celery -A signwave flower` run from anywhere.
    return CeleryProcess(settings, ["flower", f"--port={port}"], log, cwd=log.parent, **env)


def wait_for_flower(process: CeleryProcess, port: int) -> None:
    def answers() -> bool:
        assert process.proc.poll() is None, process.text()
        try:
            return get(port, "/healthcheck")[0] == 200
        except OSError:
            return False

    wait_until(answers, timeout=60, what="Flower to answer")


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


LOCALHOST = "0100007F"


def test_flower_listens_on_localhost_and_asks_for_credentials(
    redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}", redis_url=redis_url)
    port = free_port()
    # FLOWER_ADDRESS asks for every interface: signwave's settings override it.
    process = flower(
        settings,
        tmp_path / "flower.log",
        port,
        SIGNWAVE_FLOWER_BASIC_AUTH=f"{AUTH[0]}:{AUTH[1]}",
        FLOWER_ADDRESS="0.0.0.0",
    )
    with running(process):
        wait_for_flower(process, port)
        assert listening_addresses(port) == {LOCALHOST}
        for path in ("/", "/tasks", "/api/tasks", "/api/workers"):
            assert get(port, path)[0] == 401, path
            assert get(port, path, (AUTH[0], "wrong"))[0] == 401, path
            assert get(port, path, ("someone", AUTH[1]))[0] == 401, path
            assert get(port, path, AUTH)[0] == 200, path
    assert AUTH[1] not in process.text()


def test_flower_without_credentials_is_still_localhost_only(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}", redis_url=redis_url)
    port = free_port()
    process = flower(settings, tmp_path / "flower.log", port, SIGNWAVE_FLOWER_BASIC_AUTH="")
    with running(process):
        wait_for_flower(process, port)
        assert listening_addresses(port) == {LOCALHOST}
        assert get(port, "/")[0] == 200


def test_no_key_material_or_payload_in_logs_task_arguments_or_flower(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        batch_size=10,
        lease_ttl=15,
        emit_interval=0.5,
        max_in_flight=4,
    )
    # Given known keys (one PKCS#1, one PKCS#8) and payloads we can recognise
    openssl("genrsa", "-traditional", "-out", "a.pem", "2048", cwd=tmp_path)
    openssl("genrsa", "-out", "b.pem", "2048", cwd=tmp_path)
    canary = secrets.token_hex(12)
    texts = [f"payload-{canary}-{i:04d}" for i in range(RECORDS // 2)]
    blobs = [f"binary-{canary}-{i:04d}".encode() + bytes([0, 255]) for i in range(RECORDS // 2)]
    records = tmp_path / "records.jsonl"
    records.write_text(
        "".join(json.dumps({"payload": t}) + "\n" for t in texts)
        + "".join(json.dumps({"payload_b64": base64.b64encode(b).decode()}) + "\n" for b in blobs)
    )
    assert cli(settings, "db", "init").returncode == 0
    for args in (
        ["keys", "import", str(tmp_path / "a.pem"), str(tmp_path / "b.pem")],
        ["records", "import", str(records)],
    ):
        result = cli(settings, *args)
        assert result.returncode == 0, result.stderr

    # When Flower watches a worker (with task events) and beat sign everything
    port = free_port()
    auth_env = {"SIGNWAVE_FLOWER_BASIC_AUTH": f"{AUTH[0]}:{AUTH[1]}"}
    flower_process = flower(settings, tmp_path / "flower.log", port, **auth_env)
    db = Database(database_url)
    with running(flower_process):
        wait_for_flower(flower_process, port)
        worker = CeleryProcess(
            settings,
            ["worker", "-E", "--pool", "prefork", "--concurrency", "2",
             "--queues", "signwave,signing", "--hostname", f"sec-{os.getpid()}@%h",
             "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
            tmp_path / "worker.log",
        )  # fmt: skip
        beat = CeleryProcess.beat(settings, tmp_path / "beat.log")
        with running(worker, beat):
            wait_until(lambda: read_progress(db).signed == RECORDS, timeout=120, what="all signed")
            # A sign task may go on with batches its commits leased to it:
            # Flower sees one task per sign message the worker ran.
            sign_messages = len(SIGN_SUCCEEDED.findall(worker.text()))
            assert sign_messages >= 1
            wait_until(
                lambda: _sign_tasks_seen(port) >= sign_messages,
                timeout=60,
                what="Flower to see every sign task",
            )
            pages = _flower_pages(port)
        logs = worker.text() + beat.text()
    logs += flower_process.text()
    assert_all_signed_once(database_url, RECORDS)

    # Then task arguments are ids only...
    tasks = json.loads(pages["/api/tasks"])
    signs = [t for t in tasks.values() if t["name"] == "signwave.sign"]
    assert len(signs) >= sign_messages
    for task in tasks.values():
        args = task.get("args") or "[]"
        assert set(args) <= set("[]0123456789, ()"), task
        assert task.get("kwargs") in (None, "{}"), task
    assert "signed with key" in logs, "the worker did log at INFO level"
    # ...and no piece of any private key, nor any payload, is in a log or a Flower page
    secrets_ = _key_secrets(db, [tmp_path / "a.pem", tmp_path / "b.pem"])
    payloads = texts + [base64.b64encode(b).decode() for b in blobs] + [canary]
    db.dispose()
    haystack = _unwrapped(logs + "\n".join(pages.values()))
    leaked = [s for s in secrets_ if s in haystack]
    assert not leaked, f"{len(leaked)} pieces of private keys leaked"
    assert not [p for p in payloads if p in haystack], "payloads leaked"


def _unwrapped(text: str) -> str:
    """``text`` as is, then without line breaks, raw or JSON-escaped."""
    return "\n".join((text, text.replace("\n", ""), text.replace("\\n", "")))


def _sign_tasks_seen(port: int) -> int:
    status, body = get(port, "/api/tasks?taskname=signwave.sign&state=SUCCESS", AUTH)
    return len(json.loads(body)) if status == 200 else 0


def _flower_pages(port: int) -> dict[str, str]:
    paths = [
        "/",
        "/tasks",
        "/tasks/datatable?draw=1&start=0&length=1000&search%5Bvalue%5D=&order%5B0%5D%5Bcolumn%5D=0"
        "&order%5B0%5D%5Bdir%5D=asc&columns%5B0%5D%5Bdata%5D=name",
        "/api/tasks",
        "/api/workers",
        "/workers",
    ]
    pages = {}
    for path in paths:
        status, body = get(port, path, AUTH)
        assert status == 200, (path, body[:200])
        pages[path.split("?")[0]] = body
    for task_id in list(json.loads(pages["/api/tasks"]))[:10]:
        for path in (f"/task/{task_id}", f"/api/task/info/{task_id}"):
            status, body = get(port, path, AUTH)
            assert status == 200, path
            pages[path] = body
    return pages


def _key_secrets(db: Database, files: list[Path]) -> list[str]:
    """Every 40-character slice of every private key as imported and as stored, and the
    first digits of each private exponent."""
    pems = [f.read_bytes() for f in files]
    # The scan finds what it looks for, wherever the PEM's line breaks fall.
    assert all(s in _unwrapped(pems[0].decode()) for s in slices(pem_body(pems[0]), 40))
    with db.read() as conn:
        pems += [r[0].encode() for r in conn.execute(text("SELECT private_key_pem FROM keys"))]
    found: list[str] = []
    for pem in pems:
        found += slices(pem_body(pem), 40)
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        d = key.private_numbers().d
        found += [str(d)[:40], f"{d:x}"[:40]]
    assert len(found) > 4 * 1000
    return found
