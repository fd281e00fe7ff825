"""`signwave run`: the whole job in one command, with real Celery processes as children."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from signwave.cli import output
from signwave.errors import RedisUnavailable, SignwaveError
from signwave.lock import ping_redis
from signwave.redact import redact_url
from signwave.settings import Settings, signing_processes
from signwave.store.engine import Database
from signwave.store.status import count_records, read_progress
from signwave.verify import run_verify

POLL_S = 0.25
PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_S = 20.0
# With every batch settled, a worker still shutting down after this is killed:
# it has nothing left to lose, and Celery's own shutdown takes seconds.
SETTLED_STOP_TIMEOUT_S = 0.5


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if `signwave run` itself dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._terminated = False
        with log.open("ab") as out:
            # A session of its own: Ctrl-C reaches us, and we stop the children in order.
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def exited(self) -> int | None:
        return self.proc.poll()

    def terminate(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Ask once for a shutdown: SIGTERM is Celery's warm one (running tasks
        finish), SIGQUIT its cold one."""
        if self.proc.poll() is None and not self._terminated:
            self._terminated = True
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Pool processes of a worker that died (or was killed) are left in its
        # process group, which is the child's own session.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Runner:
    def __init__(self, settings: Settings, db: Database, *, workers: int | None) -> None:
        self.settings = settings
        self.db = db
        self.workers = workers or signing_processes()
        self.console = Console(stderr=True)

    def run(self) -> bool:
        total = count_records(self.db)
        start = read_progress(self.db)
        if start.signed + start.failed >= total and start.in_flight_batches == 0:
            click.echo(f"all {total} records are already signed")
        else:
            self._sign(total, start.signed)
        report = run_verify(self.db)
        output.print_report(report)
        return report.ok

    def _sign(self, total: int, signed_before: int) -> None:
        # `kill` stops the run as cleanly as Ctrl-C: children are stopped in order.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        workdir = Path(tempfile.mkdtemp(prefix="signwave-run-"))
        children: list[Child] = []
        failed = True
        try:
            env = self._child_env(workdir, children)
            celery = [sys.executable, "-m", "celery", "-A", "signwave"]
            children.append(
                Child(
                    "worker",
                    [
                        *celery,
                        "worker",
                        "--concurrency",
                        str(self.workers),
                        "--pool",
                        "prefork",
                        "--queues",
                        "signwave,signing",
                        "--hostname",
                        f"signwave-run-{os.getpid()}@%h",
                        "--without-gossip",
                        "--without-mingle",
                        "--loglevel",
                        "INFO",
                    ],
                    env,
                    workdir / "worker.log",
                )
            )
            children.append(
                Child(
                    "beat",
                    [
                        *celery,
                        "beat",
                        "--schedule",
                        str(workdir / "beat-schedule"),
                        "--loglevel",
                        "INFO",
                    ],
                    env,
                    workdir / "beat.log",
                )
            )
            click.echo(
                f"signing {total - signed_before} records with {self.workers} worker processes, "
                f"batch size {self.settings.batch_size} (logs in {workdir})",
                err=True,
            )
            started = time.monotonic()
            self._watch(total, signed_before, children)
            elapsed = time.monotonic() - started
            done = read_progress(self.db)
            rate = (done.signed - signed_before) / elapsed if elapsed > 0 else 0.0
            click.echo(
                f"signed {done.signed - signed_before} records in {elapsed:.1f} s "
                f"({rate:.0f} records/s); {done.failed} records in failed batches"
            )
            failed = False
        except KeyboardInterrupt:
            click.echo(
                "interrupted: stopping workers (run `signwave run` again to continue)", err=True
            )
            raise
        finally:
            # Beat first, so that it sends nothing more; then all the rest at once.
            # Once every batch is settled nothing is left to finish: a cold
            # shutdown is as safe as a warm one, and seconds faster.
            sig = signal.SIGTERM if failed else signal.SIGQUIT
            for child in reversed(children):
                child.terminate(sig)
            for child in reversed(children):
                child.stop(STOP_TIMEOUT_S if failed else SETTLED_STOP_TIMEOUT_S)
            if not failed:
                shutil.rmtree(workdir, ignore_errors=True)

    def _child_env(self, workdir: Path, children: list[Child]) -> dict[str, str]:
        settings = self.settings
        env = {**os.environ, **settings.to_env()}
        env["SIGNWAVE_MAX_IN_FLIGHT"] = str(settings.max_in_flight or 2 * self.workers)
        try:
            ping_redis(settings.redis_url)
            if settings.broker.startswith(("redis://", "rediss://", "unix://")):
                ping_redis(settings.broker)
        except RedisUnavailable:
            server = shutil.which("redis-server")
            if server is None or settings.broker_url:
                raise RedisUnavailable(
                    f"cannot reach Redis at {redact_url(settings.redis_url)}: install and start "
                    "one (Debian: `apt-get install redis-server`) or set SIGNWAVE_REDIS_URL"
                ) from None
            socket = workdir / "redis.sock"
            children.append(
                Child(
                    "redis",
                    [
                        server,
                        "--port",
                        "0",
                        "--unixsocket",
                        str(socket),
                        "--unixsocketperm",
                        "700",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(workdir),
                    ],
                    dict(os.environ),
                    workdir / "redis.log",
                )
            )
            _wait_for(socket, children[-1])
            env["SIGNWAVE_REDIS_URL"] = f"unix://{socket}?db=0"
            env["SIGNWAVE_BROKER_URL"] = f"redis+socket://{socket}"
            click.echo(
                f"no Redis at {redact_url(settings.redis_url)}: started a private redis-server "
                f"for this run ({socket})",
                err=True,
            )
        return env

    def _watch(self, total: int, signed_before: int, children: list[Child]) -> None:
        columns = (
            TextColumn("signing"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]:>6.0f} rec/s"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task("sign", total=total, completed=signed_before, rate=0.0)
            last = (time.monotonic(), signed_before)
            while True:
                for child in children:
                    code = child.exited()
                    if code is not None:
                        raise SignwaveError(
                            f"celery {child.name} exited with code {code}; "
                            f"last lines of {child.log}:\n{child.tail()}"
                        )
                p = read_progress(self.db)
                now = time.monotonic()
                rate = (p.signed - last[1]) / (now - last[0]) if now > last[0] else 0.0
                if now - last[0] >= 2.0:
                    last = (now, p.signed)
                bar.update(task, completed=p.signed + p.failed, rate=max(rate, 0.0))
                if p.signed + p.failed >= total and p.in_flight_batches == 0:
                    return
                time.sleep(POLL_S)


def _wait_for(socket: Path, child: Child, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if socket.exists():
            with contextlib.suppress(RedisUnavailable):
                ping_redis(f"unix://{socket}")
                return
        if child.exited() is not None:
            break
        time.sleep(0.05)
    raise RedisUnavailable(f"the private redis-server did not start: {child.tail()}")
