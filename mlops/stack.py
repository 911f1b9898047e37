"""The server stack on one machine: PostgreSQL, an MLflow server and a Prefect server on it, a worker.

``mlops stack up`` starts real engines, not stand-ins, as supervised background processes
on 127.0.0.1 with their data under ``<state_dir>/stack``: the same servers a team runs on
hosts of their own, so a profile pointing at them (``tracking_uri: http://127.0.0.1:5000``,
``prefect_api_url: http://127.0.0.1:4201/api``) is how the flows meet real servers::

    PostgreSQL  initdb on first use; databases ``mlflow`` and ``prefect``; a password of its own
    MLflow      ``mlflow server`` on PostgreSQL, ``--serve-artifacts``: clients need no shared disk
    Prefect     ``prefect server start`` on PostgreSQL
    worker      ``prefect worker start`` on the process work pool ``stack.work_pool``

The password is generated once into ``stack/postgres.password`` (mode 0600) and reaches the
servers in their environment, never on a command line. PostgreSQL refuses to run as root:
as root it runs as the ``postgres`` user (Debian's packages make it), which must be able
to enter the state folder. Each process is recorded by pid and start time
(:mod:`mlops.processes`), so ``mlops stack down`` stops only what it started.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psycopg

from mlops import processes
from mlops.config import Settings
from mlops.environment import TELEMETRY_OFF
from mlops.errors import ConfigError, ServiceUnavailable

__all__ = ["StackProcess", "stack_down", "stack_status", "stack_up"]

DATABASE_USER = "mlops"
DATABASES = ("mlflow", "prefect")
_INSTALL_HINT = "install Debian's PostgreSQL (`apt-get install postgresql`; `make postgres` does it) or set stack.postgres_bin"


@dataclass(frozen=True)
class StackProcess:
    """One server of the stack as started: what it is, where it listens, and who it is (pid, start time)."""

    name: str
    pid: int
    started: str | None
    port: int | None
    url: str | None
    log: str

    @property
    def running(self) -> bool:
        return processes.is_ours(self.pid, self.started)


def stack_up(settings: Settings, progress: Callable[[str], None] = lambda line: None) -> list[StackProcess]:
    """Start whatever of the stack is not running; return every server. Idempotent.

    A port taken by another program, or a missing binary, is a :class:`ConfigError` before
    anything starts; a server that does not answer in time stops all this call started.
    """
    running = [server for server in _read_record(settings) if server.running]
    if {server.name for server in running} == {"postgres", "mlflow", "prefect", "worker"}:
        return running
    if running:  # a half-stack (a server died): start it again whole, from the data kept on disk
        stack_down(settings)
    binaries = _postgres_binaries(settings)
    ports = {"postgres": settings.stack.postgres_port, "mlflow": settings.stack.mlflow_port, "prefect": settings.stack.prefect_port}
    for name, port in ports.items():
        _check_port_free(name, port)
    user = _postgres_user(settings)
    started: list[StackProcess] = []
    try:
        password = _password(settings, user)
        progress("PostgreSQL")
        _start_postgres(settings, binaries, user, password, started)
        _create_databases(settings, password)
        progress("MLflow server")
        _start_mlflow(settings, password, started)
        progress("Prefect server")
        _start_prefect(settings, password, started)
        progress("Prefect worker")
        _start_worker(settings, started)
    except BaseException:  # a failure, Ctrl-C or SIGTERM half-way: nothing of the stack outlives the call
        _stop(started)
        _record_path(settings).unlink(missing_ok=True)
        raise
    return started


def stack_status(settings: Settings) -> list[tuple[StackProcess, bool]]:
    """Each recorded server and whether it runs as the process that was started and answers."""
    return [(server, server.running and _answers(server, settings)) for server in _read_record(settings)]


def stack_down(settings: Settings) -> list[StackProcess]:
    """Stop every recorded server (worker first, PostgreSQL last); the data stays for the next ``up``."""
    servers = _read_record(settings)
    _stop(servers)
    _record_path(settings).unlink(missing_ok=True)
    return servers


# --- the servers --------------------------------------------------------------------------


def _start_postgres(
    settings: Settings, binaries: dict[str, Path], user: pwd.struct_passwd | None, password: Path, started: list[StackProcess]
) -> None:
    data = _stack_dir(settings) / "postgres"
    if not (data / "PG_VERSION").is_file():
        _initdb(binaries["initdb"], data, user, password)
    port = settings.stack.postgres_port
    command = [
        str(binaries["postgres"]), "-D", str(data), "-p", str(port),
        "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
    ]  # fmt: skip
    process = _launch(settings, started, "postgres", command, _clean_environment(), port, None, user)
    _wait(started[-1], process, settings, lambda: _postgres_answers(port, password.read_text().strip()))


def _initdb(initdb: Path, data: Path, user: pwd.struct_passwd | None, password: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o700)
    if user is not None:
        os.chown(data, user.pw_uid, user.pw_gid)
    command = [
        str(initdb), "-D", str(data), "-U", DATABASE_USER, f"--pwfile={password}", "--auth-host=scram-sha-256",
        "--auth-local=scram-sha-256", "--encoding=UTF8", "--no-instructions",
    ]  # fmt: skip
    uid, gid = (user.pw_uid, user.pw_gid) if user else (None, None)
    try:
        result = subprocess.run(  # noqa: S603 — PostgreSQL's own tool, arguments ours
            command, capture_output=True, text=True, env=_clean_environment(), user=uid, group=gid, extra_groups=[] if user else None, check=False
        )
    except BaseException:  # interrupted: subprocess.run has killed initdb; no half cluster for the next `up`
        shutil.rmtree(data, ignore_errors=True)
        raise
    if result.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)  # no half-initialised cluster left for the next try
        raise ServiceUnavailable(f"initdb failed for {data}: {result.stderr.strip()[-500:]}")


def _create_databases(settings: Settings, password: Path) -> None:
    with psycopg.connect(_conninfo(settings.stack.postgres_port, "postgres"), password=password.read_text().strip(), autocommit=True) as db:
        existing = {row[0] for row in db.execute("SELECT datname FROM pg_database")}
        for name in DATABASES:
            if name not in existing:
                db.execute(f'CREATE DATABASE "{name}"')  # noqa: S608 — a name of DATABASES, never input


def _start_mlflow(settings: Settings, password: Path, started: list[StackProcess]) -> None:
    port = settings.stack.mlflow_port
    artifacts = _stack_dir(settings) / "mlartifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
    ]  # fmt: skip
    env = {**_clean_environment(), "MLFLOW_BACKEND_STORE_URI": _database_url(settings, password, "mlflow", "psycopg")}
    url = f"http://127.0.0.1:{port}"
    process = _launch(settings, started, "mlflow", command, env, port, url)
    _wait(started[-1], process, settings, lambda: processes.answers(f"{url}/health"))


def _start_prefect(settings: Settings, password: Path, started: list[StackProcess]) -> None:
    port = settings.stack.prefect_port
    url = f"http://127.0.0.1:{port}/api"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    env = {
        **_clean_environment(),
        "PREFECT_HOME": str(_stack_dir(settings) / "prefect"),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": _database_url(settings, password, "prefect", "asyncpg"),
        "PREFECT_UI_API_URL": url,
    }
    process = _launch(settings, started, "prefect", command, env, port, url)
    _wait(started[-1], process, settings, lambda: processes.answers(f"{url}/health"))


def _start_worker(settings: Settings, started: list[StackProcess]) -> None:
    api = settings.stack.profile()["prefect_api_url"]
    pool = settings.stack.work_pool
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process", "--name", f"{pool}-worker"]
    env = {**_clean_environment(), "PREFECT_API_URL": api, "PREFECT_HOME": str(_stack_dir(settings) / "worker")}
    process = _launch(settings, started, "worker", command, env, None, api)
    _wait(started[-1], process, settings, lambda: _worker_online(api, pool))


def _launch(
    settings: Settings, started: list[StackProcess], name: str, command: list[str], env: dict[str, str],
    port: int | None, url: str | None, user: pwd.struct_passwd | None = None,
) -> subprocess.Popen[bytes]:
    """Start one server and record it (in ``started`` and the state file) before a signal may stop this call."""
    log = _log_path(settings, name)
    with processes.signals_held():
        process = _start(command, log, env=env, user=user)
        started.append(StackProcess(name, process.pid, processes.process_start(process.pid), port, url, str(log)))
    _write_record(settings, started)
    return process


# --- health ---------------------------------------------------------------------------------


def _answers(server: StackProcess, settings: Settings) -> bool:
    if server.name == "postgres":
        return _port_open(server.port or 0)
    if server.name == "worker":
        return _worker_online(server.url or "", settings.stack.work_pool)
    return processes.answers(f"{server.url}/health")


def _postgres_answers(port: int, password: str) -> bool:
    try:
        psycopg.connect(_conninfo(port, "postgres"), password=password, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def _worker_online(api: str, pool: str) -> bool:
    """Whether a worker polls the pool: the Prefect API lists it once it has sent a heartbeat."""
    try:
        response = httpx.post(f"{api}/work_pools/{pool}/workers/filter", json={}, timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and any(worker.get("status") == "ONLINE" for worker in response.json())


def _wait(server: StackProcess, process: subprocess.Popen[bytes], settings: Settings, healthy: Callable[[], bool]) -> None:
    """Until the server answers; else a :class:`ServiceUnavailable` quoting its log (the caller stops what it started)."""
    timeout = settings.stack.startup_timeout_seconds
    if not processes.wait_healthy(healthy, process, timeout, interval=0.5):
        tail = Path(server.log).read_text(errors="replace").strip().splitlines()[-5:] if Path(server.log).exists() else []
        raise ServiceUnavailable(
            f"The stack's {server.name} server did not start within {timeout:g} s. Its log ({server.log}) ends: "
            + (" | ".join(tail) or "(empty)")
        )


# --- helpers ---------------------------------------------------------------------------------


def _stop(servers: Sequence[StackProcess]) -> None:
    for server in reversed(servers):
        processes.stop_tree(server.pid, server.started, processes.descendants(server.pid) if server.running else (), timeout=20.0)


def _start(command: list[str], log: Path, env: dict[str, str], user: pwd.struct_passwd | None = None) -> subprocess.Popen[bytes]:
    return processes.start(command, log_path=log, env=env, append=True, user=(user.pw_uid, user.pw_gid) if user else None)


def _clean_environment() -> dict[str, str]:
    """This process's environment without the variables that bind a client to a server, telemetry off."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "PREFECT_", "MLOPS_"))}
    return {**env, **TELEMETRY_OFF}


def _postgres_binaries(settings: Settings) -> dict[str, Path]:
    folders = [settings.stack.postgres_bin] if settings.stack.postgres_bin else sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda folder: int(folder.parent.name) if folder.parent.name.isdigit() else 0, reverse=True
    )
    for folder in folders:
        if folder and (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return {"initdb": folder / "initdb", "postgres": folder / "postgres"}
    found = {name: shutil.which(name) for name in ("initdb", "postgres")}
    if all(found.values()) and not settings.stack.postgres_bin:
        return {name: Path(path) for name, path in found.items() if path}
    where = settings.stack.postgres_bin or "/usr/lib/postgresql/*/bin or PATH"
    raise ConfigError(f"PostgreSQL's initdb and postgres are not in {where}: {_INSTALL_HINT}.")


def _postgres_user(settings: Settings) -> pwd.struct_passwd | None:
    """None (run as ourselves), or the ``postgres`` account when we are root, checked to reach the state folder."""
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise ConfigError(f"PostgreSQL does not run as root and there is no 'postgres' user: {_INSTALL_HINT}, or run as another user.") from None
    blocked = _first_unreachable(_stack_dir(settings), user)
    if blocked is not None:
        raise ConfigError(
            f"PostgreSQL runs as the 'postgres' user, which cannot enter {blocked}. Give state_dir a folder it can reach "
            f"(each folder above it searchable by others, e.g. under /var/tmp), or run mlops stack as a user other than root."
        )
    return user


def _first_unreachable(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first existing folder above ``path`` that ``user`` may not search (enter), if any."""
    groups = {user.pw_gid, *os.getgrouplist(user.pw_name, user.pw_gid)}
    for folder in reversed([path, *path.parents]):
        if not folder.exists():
            continue
        info = folder.stat()
        bit = stat.S_IXUSR if info.st_uid == user.pw_uid else stat.S_IXGRP if info.st_gid in groups else stat.S_IXOTH
        if not info.st_mode & bit:
            return folder
    return None


def _password(settings: Settings, user: pwd.struct_passwd | None) -> Path:
    """The database password's file, made once (0600, readable by PostgreSQL's user for initdb)."""
    path = _stack_dir(settings) / "postgres.password"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(24) + "\n")
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)
    return path


def _conninfo(port: int, database: str) -> str:
    return f"host=127.0.0.1 port={port} user={DATABASE_USER} dbname={database}"


def _database_url(settings: Settings, password: Path, database: str, driver: str) -> str:
    secret = password.read_text().strip()
    return f"postgresql+{driver}://{DATABASE_USER}:{secret}@127.0.0.1:{settings.stack.postgres_port}/{database}"


def _check_port_free(name: str, port: int) -> None:
    if _port_open(port):
        raise ConfigError(
            f"Port {port} on 127.0.0.1, wanted by the stack's {name} server, is taken by another program. "
            f"Stop it, or set stack.{'postgres' if name == 'postgres' else name}_port in mlops.yaml to a free port."
        )


def _port_open(port: int) -> bool:
    return processes.connection_problem("127.0.0.1", port) is None


def _stack_dir(settings: Settings) -> Path:
    return settings.state_dir / "stack"


def _log_path(settings: Settings, name: str) -> Path:
    return settings.state_dir / "logs" / f"stack-{name}.log"


def _record_path(settings: Settings) -> Path:
    return _stack_dir(settings) / "stack.json"


def _write_record(settings: Settings, servers: list[StackProcess]) -> None:
    path = _record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps([asdict(server) for server in servers], indent=2) + "\n")
    temporary.replace(path)


def _read_record(settings: Settings) -> list[StackProcess]:
    try:
        return [StackProcess(**entry) for entry in json.loads(_record_path(settings).read_text())]
    except (OSError, ValueError, TypeError):
        return []

