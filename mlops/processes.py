"""One owner for the processes the framework starts: start a tree, wait for health, stop the tree.

Every server (BentoML, the swap proxy, the watchdog, the MLflow UI, the local Prefect
server) starts in a session of its own, and is known by its pid *and* its start time
(``/proc/PID/stat`` field 22): a pid read back from a state file is signalled only while
it is still the same process, never one the kernel handed out again. A tree is stopped
as a unit: SIGTERM to the leader's process group and to every process of the tree we
know of (BentoML starts each worker in a session of its own, outside the arbiter's
group), SIGKILL to whatever of it is left at the deadline::

    process = start([sys.executable, "-m", "http.server"], log_path=log)
    wait_healthy(lambda: answers(f"{url}/health"), process, deadline_seconds=30)
    stop_tree(process.pid, process_start(process.pid))

A process that starts others and must outlive their parents' deaths calls
:func:`become_subreaper`: orphaned workers then stay in its tree, where
:func:`descendants` still finds them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx

__all__ = [
    "Member",
    "alive",
    "answers",
    "become_subreaper",
    "connection_problem",
    "descendants",
    "interrupts_deferred",
    "is_ours",
    "left",
    "process_start",
    "run_until_interrupted",
    "signal_if_ours",
    "signals_held",
    "start",
    "stop_process",
    "stop_tree",
    "wait_healthy",
]

Member = tuple[int, str]  # a process of a tree: pid and start time
_PR_SET_CHILD_SUBREAPER = 36


def start(
    command: Sequence[str],
    *,
    log_path: Path | None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    append: bool = False,
    user: tuple[int, int] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own, its output in ``log_path`` (None: this process's).

    ``user``: the uid and gid to run as (a server that refuses root, started by root).
    """
    uid, gid = user if user else (None, None)
    groups: list[int] | None = [] if user else None
    if log_path is None:
        return subprocess.Popen(  # noqa: S603
            list(command), cwd=cwd, env=env, stdin=stdin, start_new_session=True, user=uid, group=gid, extra_groups=groups
        )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab" if append else "wb") as log:
        return subprocess.Popen(  # noqa: S603 — our own interpreter and tools, never a shell
            list(command), cwd=cwd, env=env, stdin=stdin, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            user=uid, group=gid, extra_groups=groups,
        )  # fmt: skip


def wait_healthy(
    healthy: Callable[[], bool],
    process: subprocess.Popen[bytes] | None,
    deadline_seconds: float,
    interval: float = 0.25,
) -> bool:
    """Poll ``healthy`` until it is true (True), ``process`` exits or the deadline passes (False)."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        if healthy():
            return True
        time.sleep(interval)
    return False


def answers(url: str, check: Callable[[httpx.Response], bool] | None = None) -> bool:
    """Whether ``url`` answers 200 (and ``check`` accepts the answer) within 2 s: one health probe."""
    try:
        response = httpx.get(url, timeout=2.0)
        return response.status_code == 200 and (check is None or check(response))
    except (httpx.HTTPError, ValueError):  # not listening yet, or an answer that is not what we started
        return False


def connection_problem(host: str, port: int, timeout: float = 1.0) -> str | None:
    """Why a TCP connection to ``host:port`` fails ("Connection refused", ...), or None when something listens."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def process_start(pid: int) -> str | None:
    """The process's start time (clock ticks after boot, ``/proc/PID/stat`` field 22); None where unknown."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else None


def is_ours(pid: int, started: str | None) -> bool:
    """Whether ``pid`` runs (not a zombie) and is the process that started at ``started``."""
    _reap(pid)
    fields = _stat(pid)
    if not fields:
        return _exists(pid)  # no /proc (another OS): existence is all we know
    return fields[0] != "Z" and (started is None or fields[19] == started)


def alive(pid: int, started: str | None = None) -> bool:
    """Whether the tree led by ``pid`` still runs as ours: its leader, or its group once the leader exited.

    Linux never hands out a pid while a process group of that id exists, so a group whose
    leader has exited is still ours: its members are what is left to stop.
    """
    if is_ours(pid, started):
        return True
    if process_start(pid) is not None and _stat(pid)[0] != "Z":
        return False  # the pid is someone else's now
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return any(_live_in_group(_stat(member), pid) for member in _pids())


def _live_in_group(fields: list[str], group: int) -> bool:
    return len(fields) > 2 and fields[2] == str(group) and fields[0] != "Z"


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").glob("[0-9]*")]


def signal_if_ours(pid: int, started: str | None, signum: int) -> bool:
    """Send ``signum`` to ``pid`` only while it is still the process that started at ``started``."""
    if not is_ours(pid, started):
        return False
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def descendants(pid: int) -> list[Member]:
    """Every process below ``pid`` (children, theirs...) with its start time; empty where /proc is unknown."""
    parents: dict[int, list[int]] = {}
    for process in _pids():
        fields = _stat(process)
        if len(fields) > 1:
            parents.setdefault(int(fields[1]), []).append(process)
    found, todo = [], list(parents.get(pid, []))
    while todo:
        child = todo.pop()
        if (begun := process_start(child)) is not None:
            found.append((child, begun))
        todo += parents.get(child, [])
    return found


def left(family: Iterable[Member]) -> list[Member]:
    """The processes of ``family`` still running as themselves (not exited, not a reused pid)."""
    return [(pid, begun) for pid, begun in family if is_ours(pid, begun)]


def stop_tree(pid: int, started: str | None = None, family: Iterable[Member] = (), timeout: float = 15.0) -> None:
    """Stop the tree led by ``pid``: SIGTERM (graceful), SIGKILL what is left after ``timeout``.

    ``family`` adds members known from before (a state file's record), which matter once
    the leader is gone and its workers are orphans elsewhere. Only processes that are still
    ours are signalled.
    """
    leader = alive(pid, started)
    members = {*left(family), *(descendants(pid) if is_ours(pid, started) else [])}
    if not leader and not members:
        return
    if leader:
        _signal_group(pid, signal.SIGTERM)
    for member, begun in members:
        signal_if_ours(member, begun, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _still_there(pid, started, members) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid, started):
        _signal_group(pid, signal.SIGKILL)
    for member, begun in left(members):
        signal_if_ours(member, begun, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _still_there(pid, started, members) and time.monotonic() < deadline:
        time.sleep(0.05)


def _still_there(pid: int, started: str | None, members: Iterable[Member]) -> bool:
    """Whether any of the tree is left, zombies of our own children included (reaped on the way).

    A stop returns only once the leader's process group is gone, so the caller may reuse
    its port, its files or its pid's slot at once.
    """
    for member, _ in members:
        _reap(member)
    _reap(pid)
    return alive(pid, started) or bool(left(members)) or _group_exists(pid)


def _group_exists(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def run_until_interrupted(process: subprocess.Popen[bytes], started: str | None) -> int | None:
    """Wait for ``process``; on Ctrl-C, SIGTERM or SIGHUP stop its whole tree. Its exit code, None if interrupted.

    For the foreground servers (``mlops serve``, ``mlops ui``): the caller is made a
    subreaper first, so workers orphaned by a crash stay in its tree and are stopped too.
    """
    family: list[Member] = []
    try:
        while process.poll() is None:
            family = descendants(process.pid) or family
            try:
                process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
        return process.returncode
    except KeyboardInterrupt:
        return None
    finally:
        with interrupts_deferred():
            stop_tree(process.pid, started, [*family, *descendants(os.getpid())])


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ignore Ctrl-C, SIGTERM and SIGHUP inside: a clean-up must not be cut short by a second signal.

    Outside the main thread (where handlers cannot be set) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            signal.signal(signum, handler)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block ends, then deliver the first that came.

    For "start a process and record it": a signal cannot land between the two, so whoever
    cleans up on it knows the process. (Unlike :func:`interrupts_deferred`, nothing is ignored:
    a process started inside gets the default handlers, as exec resets caught signals.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    kept = {signum: signal.signal(signum, lambda number, frame: arrived.append(number)) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            signal.signal(signum, handler)
        if arrived:
            signal.raise_signal(arrived[0])


def stop_process(pid: int, started: str | None, timeout: float = 15.0) -> None:
    """Stop the one process ``pid`` (SIGTERM, SIGKILL after ``timeout``), not the trees it started, while it is ours."""
    if not signal_if_ours(pid, started, signal.SIGTERM):
        return
    deadline = time.monotonic() + timeout
    while is_ours(pid, started) and time.monotonic() < deadline:
        time.sleep(0.05)
    signal_if_ours(pid, started, signal.SIGKILL)


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``); False elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _stat(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name (which may hold spaces and parentheses): state first."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return []
    return stat.rpartition(")")[2].split()


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    # A child of this process (tests, the demo, the watchdog) lingers as a zombie until waited for.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
