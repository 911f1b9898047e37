"""The ``mlops`` command line.

Exit codes: 0 success (a challenger that is not promoted is a normal outcome),
1 a gate blocked the run (validation, or a refused promote/rollback), 2 usage, configuration or
data-file error, 3 the endpoint failed to start or a deployed version was rejected, 4 a configured
server (MLflow, Prefect) does not answer.
Everything heavy is imported inside the commands, so ``mlops --help`` is instant.
The CLI is the top layer: it runs the project's flows (:mod:`mlops.project`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlops.errors import ConfigError, MlopsError, ServingError, ValidationFailed

if TYPE_CHECKING:
    from mlops.config import Settings

__all__ = ["cli", "main"]


def _interrupt_on_termination() -> None:
    """SIGTERM and SIGHUP end the command as Ctrl-C does, so the processes it started are stopped too."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


def _settings(ctx: click.Context, environment: str | None = None) -> Settings:
    """The settings for the global options; ``environment`` beats --env."""
    # pydantic is imported here, not at start-up, so `mlops --help` stays instant.
    from mlops.config import load_settings

    config, state_dir, project, chosen = ctx.find_root().obj
    settings = load_settings(config, state_dir, project, environment or chosen)
    if not (config or os.environ.get("MLOPS_CONFIG") or (settings.project.root / "mlops.yaml").is_file()):
        _say(settings, "note", f"no mlops.yaml in {settings.project.root} or above: the built-in defaults apply "
                               "(the bundled sample's paths). `mlops init DIR` starts a project.")  # fmt: skip
    return settings


def _say(settings: Settings | None, level: str, text: str) -> None:
    """An ``error:`` or ``note:`` line on stderr; a JSON line when the logs are JSON, so a collector parses every line."""
    if settings is not None:
        from mlops.logs import json_line, resolved

        if resolved(settings.logs)[0] == "json":
            click.echo(json_line("warning" if level == "note" else level, "mlops.cli", text), err=True)
            return
    click.secho(f"{level}: {text}", fg="red" if level == "error" else "yellow", err=True)


def _command(function: Callable[..., Any] | None = None, *, services: bool = True) -> Any:
    """Run a command with the tools bound to the state folder; turn MlopsError into a clean exit.

    ``services=False``: the configured servers need not answer (``mlops stack`` starts them).
    """
    if function is None:
        return functools.partial(_command, services=services)

    @functools.wraps(function)
    @click.pass_context
    def wrapper(ctx: click.Context, /, **kwargs: Any) -> Any:
        from mlops.environment import check_services, redact, tool_environment, tracking_unavailable
        from mlops.logs import console_logs

        settings = None
        chosen = kwargs.pop("command_environment", None)
        if chosen:  # `mlops train --env staging` as `mlops --env staging train`
            ctx.find_root().obj = (*ctx.find_root().obj[:3], chosen)
            os.environ["MLOPS_ENV"] = chosen
        try:
            settings = _settings(ctx)
            with console_logs(settings.logs):
                if services:
                    check_services(settings)
                with tool_environment(settings):
                    return function(settings, **kwargs)
        except MlopsError as exc:
            _say(settings, "error", redact(str(exc)))
            sys.exit(exc.exit_code)
        except Exception as exc:  # the project's own code failed: its file and line, exit 2; else a framework bug
            from mlops.project import failing_project_line

            unavailable = tracking_unavailable(exc, settings) if settings is not None else None
            if unavailable is not None:  # the tracking server went away mid-command: exit 4, no traceback
                _say(settings, "error", str(unavailable))
                sys.exit(unavailable.exit_code)
            line = failing_project_line(settings, exc) if settings is not None else None
            if line is None:
                raise
            _say(settings, "error", f"{line.filename}:{line.lineno}: {type(exc).__name__}: {redact(str(exc))}. "
                                    "This is the project's code: fix it and run the command again.")  # fmt: skip
            sys.exit(ConfigError.exit_code)

    option = click.option("--env", "command_environment", metavar="NAME", help="The profile of mlops.yaml to run in (as `mlops --env`).")
    return option(wrapper)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False), envvar="MLOPS_CONFIG", help="Config file (YAML).")
@click.option("--state-dir", type=click.Path(file_okay=False), envvar="MLOPS_STATE_DIR", help="State folder.")
@click.option(
    "--project", type=click.Path(file_okay=False), envvar="MLOPS_PROJECT", help="Project folder (default: the nearest with mlops.yaml, from the working directory up)."
)
@click.option(
    "--log-format", type=click.Choice(["auto", "text", "json"]), help="Log lines on stderr (logs.format): auto is JSON when not a terminal."
)
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False), help="Lowest level logged (logs.level).")
@click.option("--env", "environment", envvar="MLOPS_ENV", help="The profile of mlops.yaml's environments to run in (default: local).")
@click.pass_context
def cli(
    ctx: click.Context,
    config: str | None,
    state_dir: str | None,
    project: str | None,
    log_format: str | None,
    log_level: str | None,
    environment: str | None,
) -> None:
    """Validate, train, register, serve and monitor models: the whole ML loop."""
    # As environment variables, which beat the config file and reach the processes a command starts.
    for name, value in (("MLOPS_LOGS__FORMAT", log_format), ("MLOPS_LOGS__LEVEL", log_level and log_level.upper())):
        if value:
            os.environ[name] = value
    if environment:  # reaches the processes a command starts (servers, the scheduled flows' runner)
        os.environ["MLOPS_ENV"] = environment
    ctx.obj = (config, state_dir, project, environment)


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--data", type=click.Path(dir_okay=False, exists=True), help="The table to learn from (CSV or Parquet).")
@click.option("--target", help="The column to predict (required with --data).")
def init(directory: str, data: str | None, target: str | None) -> None:
    """Start a project in DIRECTORY: config, data + contract, flows, service, notebook, tests, Makefile.

    Without --data, the project learns from the bundled sample (breast cancer).
    """
    from mlops.scaffold import init_project

    try:
        project = init_project(directory, data, target)
    except MlopsError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    click.echo(f"Project written: {project.root}")
    click.echo(f"  data      {project.data.relative_to(project.root)} (target '{project.target}', {project.task})")
    click.echo(f"  contract  {project.contract.relative_to(project.root)} (drafted from the data: review it)")
    click.echo("  flows/, models/service.py, notebooks/, tests/, mlops.yaml, Makefile")
    click.echo(f"Next:  cd {directory} && make demo && make test")


@cli.command()
@click.argument("data", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--scope",
    type=click.Choice(["training", "batch"]),
    default="training",
    show_default=True,
    help="training: every column, min_rows, classes; batch: the features a scoring batch needs.",
)
@click.option("--chunk-rows", type=click.IntRange(1), help="Stream DATA this many rows at a time (large files).")
@_command
def validate(settings: Settings, data: str | None, scope: str, chunk_rows: int | None) -> None:
    """Check DATA (default: the training file) against the data contract (exit 1 if blocked)."""
    from mlops import contract
    from mlops.progress import progress

    path = Path(data) if data else settings.data.training
    with progress(f"validating {path.name}"):
        if chunk_rows:
            result = contract.validate_file_in_chunks(
                path, settings.data.contract, scope, chunk_rows  # type: ignore[arg-type]
            )
        else:
            result = contract.validate_file_with_contract(path, settings.data.contract, scope)  # type: ignore[arg-type]
    report = contract.write_html_report(result, settings.reports_dir / "validation-latest.html")
    click.echo(result.summary())
    click.echo(f"HTML report: {report}")
    if not result.success:
        sys.exit(ValidationFailed.exit_code)


@cli.group()
def contract() -> None:
    """Draft the data contract, or regenerate its GX suite."""


@contract.command("draft")
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--target", help="The target column (default: data.target).")
@click.option("--margin", type=click.FloatRange(0.0), default=0.1, show_default=True, help="Range widening.")
@click.option("--write", is_flag=True, help="Overwrite an existing contract instead of printing the diff.")
@_command
def contract_draft(settings: Settings, data: str, target: str | None, margin: float, write: bool) -> None:
    """Infer a contract from DATA; if one exists, print what would change (a diff) instead.

    The contract is DATA's own (data/contracts/<name>.yaml, named after the file)
    unless data.contract is set for DATA in the config.
    """
    from mlops import contract as contracts
    from mlops.config import dataset_name
    from mlops.data import load_table

    settings = _settings_for_draft(settings, Path(data))
    path, name = contracts.contract_file(settings.data.contract), settings.data.name or dataset_name(Path(data))
    drafted = contracts.draft_contract(load_table(data), target or settings.data.target, name, margin=margin)
    existing = contracts.load_contract(path) if path.is_file() else None
    if existing is not None and existing.name != drafted.name:
        raise ConfigError(
            f"{path} is the contract of dataset '{existing.name}', not '{drafted.name}': nothing written. "
            "Set data.contract to a new file for this dataset."
        )
    if existing is not None and not write:
        diff = contracts.contract_diff(existing, drafted, path)
        click.echo(diff or f"No change: {path} already matches a draft of {data}.")
        if diff:
            click.echo(f"Nothing written. Review the diff, then edit {path} or rerun with --write.")
        return
    click.echo(f"Contract written: {contracts.write_contract(drafted, path)} ({drafted.task}, target '{drafted.target}')")
    if note := contracts.excluded_columns_note(drafted):
        click.echo(note)
    click.echo(f"GX suite written: {_write_suite(settings)}")
    if Path(data).resolve() != settings.data.training.resolve() or drafted.target != settings.data.target:
        click.echo(
            f"To train on it, set in mlops.yaml:  data: {{training: {data}, target: {drafted.target}}}"
        )


def _settings_for_draft(settings: Settings, data: Path) -> Settings:
    """The settings of the dataset in DATA: the configured one, or DATA's own contract and suite."""
    from mlops import contract as contracts
    from mlops.config import dataset_name

    if data.resolve() == settings.data.training.resolve() or "contract" in settings.data.model_fields_set:
        return settings
    name = dataset_name(data)
    folder, suites = contracts.contract_file(settings.data.contract).parent, contracts.contract_file(settings.data.suite).parent
    update = {"name": name, "contract": folder / f"{name}.yaml", "suite": suites / f"{name}.json"}
    return settings.model_copy(update={"data": settings.data.model_copy(update=update)})


@contract.command("suite")
@_command
def contract_suite(settings: Settings) -> None:
    """Regenerate the GX suite (data.suite) from the contract after editing it."""
    click.echo(f"GX suite written: {_write_suite(settings)}")


def _write_suite(settings: Settings) -> Path:
    from mlops import contract as contracts

    return contracts.write_suite(contracts.to_suite(contracts.load_contract(settings.data.contract)), settings.data.suite)


@cli.command()
@click.option("--data", type=click.Path(dir_okay=False), help="Training data (default: data.training).")
@_command
def train(settings: Settings, data: str | None) -> None:
    """Validate, train, register a new version and run the champion gate."""
    from mlops.project import load_flow

    training_flow = load_flow(settings, "training")

    from mlops import reporting
    from mlops.orchestration import command_flow_runs
    from mlops.progress import progress

    with command_flow_runs(settings), progress("training"):
        outcome = training_flow(settings, data_path=Path(data) if data else None)
    reporting.print_training(outcome)


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: serving.port).")
@click.option("--alias", help="Registry alias to serve (default: serving.alias).")
@_command
def serve(settings: Settings, port: int | None, alias: str | None) -> None:
    """Serve the model behind ALIAS on 127.0.0.1 until interrupted."""
    from mlops import processes, serving

    _interrupt_on_termination()  # from the start: a signal during the readiness wait stops the server too
    processes.become_subreaper()  # workers orphaned by a crashed arbiter stay ours to stop
    server = None
    try:
        from mlops.progress import progress

        alias = alias or settings.serving.alias
        with progress(f"starting the {alias} model server"):
            version = serving.resolve_alias(settings.model.name, alias)
            tag = serving.import_model(settings.model.name, version)
            server = serving.start_server(settings, tag, port=port or settings.serving.port)
        click.echo(f"Serving {settings.model.name} v{version} ({alias}) at {server.url}  (Ctrl-C to stop)")
        code = processes.run_until_interrupted(server.process, server.started)
    except KeyboardInterrupt:  # start_server stops what it started; after it, so do we
        if server is not None:
            with processes.interrupts_deferred():
                server.stop()
        click.echo("Interrupted; the server is stopped.", err=True)
        sys.exit(130)
    if code is None:
        click.echo("Stopped.")
        sys.exit(130)
    click.secho(f"error: the model server exited with code {code}; see {server.log_path}.", fg="red", err=True)
    sys.exit(3)


@cli.command()
@click.argument("data", type=click.Path(dir_okay=False))
@click.option("--output", type=click.Path(dir_okay=False), help="Scores file (default: STATE/scores/NAME-scores.csv).")
@_command
def score(settings: Settings, data: str, output: str | None) -> None:
    """Validate DATA against the contract, then score it with the champion (exit 1 if blocked)."""
    from mlops.project import load_flow

    scoring_flow = load_flow(settings, "scoring")
    from mlops.orchestration import command_flow_runs
    from mlops.progress import progress

    with command_flow_runs(settings), progress(f"scoring {Path(data).name}"):
        outcome = scoring_flow(settings, data_path=Path(data), output_path=Path(output) if output else None)
    for warning in outcome.validation.warnings:
        click.echo(f"warning: {warning.describe()}")
    click.echo(f"Scored {outcome.rows} rows with {settings.model.name} v{outcome.model_version}: {outcome.output_path}")
    click.echo(f"Validation report: {outcome.validation_report}")


@cli.command()
@click.option("--alias", help="Registry alias to package (default: serving.alias).")
@_command
def package(settings: Settings, alias: str | None) -> None:
    """Build a Bento (service, model, pinned dependencies) and its Docker build context."""
    from mlops import packaging
    from mlops.progress import progress

    with progress("packaging a Bento"):
        result = packaging.package(settings, alias)
    click.echo(f"Built Bento {result.bento_tag} with model {result.model_tag} (registry version {result.version})")
    click.echo(f"Docker build context: {result.build_context}")
    click.echo(f"  docker build -t {result.bento_tag} {result.build_context}   # the image `mlops k8s render` names")


@cli.group(invoke_without_command=True)
@click.option("--alias", help="Registry alias to deploy (default: serving.alias).")
@click.option("--shadow", metavar="VERSION", help="Run VERSION in shadow mode beside the serving one; 'off' stops it.")
@click.pass_context
def deploy(ctx: click.Context, alias: str | None, shadow: str | None) -> None:
    """Deploy ALIAS in the background at serving.port; swap versions without dropping requests.

    The new version is started beside the running one and smoke-tested before it gets
    traffic; a version that fails is rejected and the alias rolls back.

    With --shadow VERSION, VERSION runs beside the serving version and gets a copy of
    every request; clients get the serving version's answers only, the shadow's are
    logged apart for `mlops monitor` to compare. Promote it with `mlops promote VERSION`.
    """
    if shadow is not None and (alias is not None or ctx.invoked_subcommand is not None):
        raise click.UsageError("--shadow goes alone: `mlops deploy --shadow VERSION` or `mlops deploy --shadow off`.")
    if shadow is not None:
        ctx.invoke(_deploy_shadow, version=shadow)
    elif ctx.invoked_subcommand is None:
        ctx.invoke(_deploy, alias=alias)


@_command
def _deploy(settings: Settings, alias: str | None) -> None:
    from mlops import deployment

    _interrupt_on_termination()  # SIGTERM as Ctrl-C: a version half-started is stopped either way
    from mlops.progress import progress

    before = deployment.deployment_status(settings).state
    try:
        with progress("deploying"):
            state = deployment.deploy(settings, alias)
    except KeyboardInterrupt:
        click.secho("deploy interrupted: what it had started is stopped; the running deployment is unchanged.",
                    fg="yellow", err=True)
        sys.exit(130)
    backend = state.backend
    if before is not None and state.instances == before.instances:  # a healthy version is never restarted
        restarted = [name for name, pid in (("proxy", before.proxy_pid), ("watchdog", before.watchdog_pid))
                     if pid != getattr(state, f"{name}_pid")]
        again = f"; started the {' and the '.join(restarted)} again" if restarted else ""
        click.echo(f"Already serving {state.model_name} v{backend.version} ({state.alias}) at {state.url}{again}")
        return
    replaced = f"; replaced v{state.replaced_version}" if state.replaced_version else ""
    click.echo(f"Deployed {state.model_name} v{backend.version} ({state.alias}) at {state.url}{replaced}")
    click.echo(f"  ready in {backend.ready_seconds:g} s; model server pid {backend.pid} on port {backend.port}")
    for replica in state.replicas:
        click.echo(f"  instance pid {replica.pid} on port {replica.port}")
    click.echo(f"  watchdog pid {state.watchdog_pid} restarts a dead proxy or model server (log: logs/watchdog.log)")
    if state.shadow is not None:
        click.echo(f"  shadow v{state.shadow.version} keeps receiving copies")
    elif before is not None and before.shadow is not None:
        why = "it is the serving version now" if before.shadow.version == backend.version else "it was not running"
        click.echo(f"  shadow v{before.shadow.version} stopped: {why}")


@_command
def _deploy_shadow(settings: Settings, version: str) -> None:
    from mlops import deployment

    if version.lower() == "off":
        stopped = deployment.stop_shadow(settings)
        click.echo(f"Stopped shadow v{stopped.version}; the serving version answers alone." if stopped
                   else "No shadow was running.")
        return
    before = deployment.deployment_status(settings).state
    state = deployment.deploy_shadow(settings, version)
    shadow, serving = state.shadow, state.backend
    if shadow is None or serving is None:
        raise ServingError("The shadow did not start beside the serving version; see `mlops deploy status`.")
    if before is not None and before.shadow == shadow:
        click.echo(f"Shadow v{shadow.version} already runs beside v{serving.version}.")
        return
    replaced = f"; replaced shadow v{before.shadow.version}" if before is not None and before.shadow else ""
    click.echo(f"Shadow v{shadow.version} runs beside v{serving.version} at {state.url}{replaced}")
    click.echo(f"  ready in {shadow.ready_seconds:g} s; shadow pid {shadow.pid} on port {shadow.port}, niced")
    click.echo(f"  its predictions: {deployment.shadow_predictions_dir(settings)}; compare with `mlops monitor`")


@deploy.command("status")
@_command
def deploy_status(settings: Settings) -> None:
    """Show the running deployment; exit 3 when it is not healthy."""
    from mlops import deployment

    status = deployment.deployment_status(settings)
    if status.state is None:
        click.echo("Nothing is deployed. Run `mlops deploy`.")
        sys.exit(3)
    state = status.state
    click.echo(f"{state.model_name} v{state.backend.version} ({state.alias}) at {state.url}, since {state.deployed_at}")
    for part in status.parts:  # each process as it runs now: proxy, watchdog, each server's arbiter and workers
        click.echo(f"  {part.name} pid {part.pid}: {'up' if part.up else 'DOWN'}")
    click.echo(f"  ready: {'yes' if status.ready else 'NO'}")
    if status.ready and not status.healthy:
        click.echo("  (answering, but not every part is up: the watchdog restarts them, or run `mlops deploy`)")
    if state.shadow is not None:
        copies = status.shadow_copies or {}
        counts = ", ".join(f"{name} {copies[name]}" for name in ("sent", "dropped", "failed", "refused") if name in copies)
        click.echo(f"  shadow v{state.shadow.version} pid {state.shadow.pid}: {'up' if status.shadow_alive else 'DOWN'}"
                   + (f"; copies {counts}" if counts else ""))
        if copies.get("last_error"):
            click.echo(f"  shadow's last error: {copies['last_error']}")
    if not status.healthy:
        sys.exit(3)


@deploy.command("stop")
@_command
def deploy_stop(settings: Settings) -> None:
    """Stop the deployment (model server, its shadow if any, and proxy)."""
    from mlops import deployment

    state = deployment.stop_deployment(settings)
    click.echo(f"Stopped {state.model_name} v{state.backend.version}." if state else "Nothing was deployed.")


@cli.command()
@click.option("--current", type=click.Path(dir_okay=False), help="Current data (default: logged predictions).")
@click.option("--labels", type=click.Path(dir_okay=False), help="Ground truth file (default: the label store): request_id, label[, record].")
@_command
def monitor(settings: Settings, current: str | None, labels: str | None) -> None:
    """Check drift (and quality) against the champion's data; retrain when the policy says so."""
    from mlops.project import load_flow

    monitoring_flow = load_flow(settings, "monitoring")
    from mlops import reporting
    from mlops.orchestration import command_flow_runs
    from mlops.progress import progress

    with command_flow_runs(settings), progress("monitoring"):
        outcome = monitoring_flow(
            settings, current_path=Path(current) if current else None, labels_path=Path(labels) if labels else None
        )
    if outcome.validation is not None and outcome.validation.failures:
        click.echo(f"Data contract violations in the current batch (report: {outcome.validation_report}):")
        click.echo(outcome.validation.summary())
    reporting.print_monitoring(outcome)


@cli.group()
def labels() -> None:
    """Ground truth for logged predictions: add labels, see how many predictions have one."""


@labels.command("add")
@click.argument("file", type=click.Path(dir_okay=False))
@_command
def labels_add(settings: Settings, file: str) -> None:
    """Store the labels in FILE (CSV or Parquet: request_id, label or the target, optional record).

    Labels whose request_id matches no logged prediction are refused: they would never join one.
    """
    from mlops import contract
    from mlops import labels as label_store
    from mlops.prediction_log import RequestIndex

    target = contract.load_contract(settings.data.contract).target_column
    logged = RequestIndex(settings.predictions_dir, max_ids=None)  # one read, every id: this process ends
    logged.refresh()
    added = label_store.add_label_file(file, settings.labels_dir, target, known=logged)
    click.echo(added.summary())


@labels.command("status")
@_command
def labels_status(settings: Settings) -> None:
    """How many logged predictions have a label, per model version and day."""
    from mlops import labels as label_store

    table, unmatched = label_store.label_status(settings.labels_dir, settings.predictions_dir)
    if table.empty:
        click.echo(f"No logged predictions in {settings.predictions_dir}.")
    for row in table.itertuples(index=False):
        click.echo(f"v{row.model_version}  {row.day}  {row.labeled}/{row.predictions} labeled ({row.share:.0%})")
    if unmatched:
        click.echo(f"{unmatched} stored label(s) match no logged prediction.")


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@_command
def ui(settings: Settings, port: int) -> None:
    """Open the MLflow UI on 127.0.0.1 for the project's store."""
    from mlops import processes

    _interrupt_on_termination()
    processes.become_subreaper()
    # The store URI goes by environment, not argv, where `ps` would show its password.
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": settings.mlflow_tracking_uri}
    args = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port)]
    from mlops.tracking import MODEL_TRAINING_VIEW

    click.echo(f"MLflow UI at http://127.0.0.1:{port}/#/?{MODEL_TRAINING_VIEW} (Ctrl-C to stop)")
    process = processes.start(args, log_path=None, env=env)
    code = processes.run_until_interrupted(process, processes.process_start(process.pid))
    sys.exit(130 if code is None else code)


@cli.command()
@_command
def demo(settings: Settings) -> None:
    """Run the whole loop: validate, train, serve, send traffic, detect drift, retrain."""
    from mlops import reporting
    from mlops.demo import run_demo
    from mlops.orchestration import command_flow_runs

    _interrupt_on_termination()
    try:
        with command_flow_runs(settings):
            summary = run_demo(settings)
    except KeyboardInterrupt:
        click.secho("demo interrupted; its deployment was stopped.", fg="yellow", err=True)
        sys.exit(130)
    reporting.print_demo(summary)


@cli.command()
@click.option("--list", "list_only", is_flag=True, help="Show the scheduled deployments and their next runs.")
@_command
def schedule(settings: Settings, list_only: bool) -> None:
    """Serve scheduled retraining (cron) and monitoring (interval) until interrupted.

    Without prefect_api_url, starts a local Prefect server (127.0.0.1, state folder).
    """
    from mlops import orchestration

    if list_only:
        _list_schedules(settings)
        return
    if settings.schedules.work_pool:
        _deploy_to_work_pool(settings)
        return
    server = None
    if not settings.prefect_api_url:
        server = orchestration.start_local_server(settings, settings.schedules.prefect_port)
    api_url = server.api_url if server else str(settings.prefect_api_url)
    try:  # Prefect's runner turns SIGTERM into a graceful stop, so `finally` runs then too
        import prefect

        from mlops.schedules import deployments

        config = click.get_current_context().find_root().params.get("config")
        click.echo(
            f"Serving schedules: training '{settings.schedules.training_cron}' (cron, UTC), monitoring every "
            f"{settings.schedules.monitoring_interval_minutes:g} min, on {api_url}. Ctrl-C to stop."
        )
        with orchestration.using_api(api_url):
            prefect.serve(*deployments(settings, config), print_starting_message=False)
    except KeyboardInterrupt:
        click.echo("Stopping.")
    finally:
        if server is not None:
            server.stop()


def _deploy_to_work_pool(settings: Settings) -> None:
    if not settings.prefect_api_url:
        raise ConfigError(
            f"schedules.work_pool is '{settings.schedules.work_pool}' but no Prefect server is configured: a work pool lives on one. "
            "Set prefect_api_url (in the profile: `mlops stack up` prints it), or remove schedules.work_pool to serve the schedules here."
        )
    from mlops.schedules import deploy_to_work_pool

    config = click.get_current_context().find_root().params.get("config")
    names = deploy_to_work_pool(settings, config)
    click.echo(f"Registered {' and '.join(names)} on work pool '{settings.schedules.work_pool}' of the Prefect server: "
               f"training '{settings.schedules.training_cron}' (cron, UTC), monitoring every "
               f"{settings.schedules.monitoring_interval_minutes:g} min. Its workers run them (`mlops stack up` starts one).")  # fmt: skip


def _list_schedules(settings: Settings) -> None:
    from mlops import orchestration, reporting

    api_url = settings.prefect_api_url
    if not api_url:
        server = orchestration.find_local_server(settings)
        if server is None:
            click.echo("No schedule server is running for this state folder. Start one with `mlops schedule`.")
            return
        api_url = server.api_url
    from mlops.schedules import list_schedules

    with orchestration.using_api(api_url):
        reporting.print_schedules(list_schedules())


@cli.command()
@click.option("--dry-run", is_flag=True, help="List what would be cleaned; change nothing.")
@_command
def doctor(settings: Settings, dry_run: bool) -> None:
    """List and clean what stopped commands left: incomplete versions, runs left RUNNING, servers' metrics folders."""
    from mlops import serving, tracking

    tracking.ensure_store(settings)
    found = tracking.clean_leftovers(settings, dry_run=dry_run)
    metrics = serving.stale_metrics_dirs(settings, remove=not dry_run)
    done = "found" if dry_run else "cleaned"
    for version in found.versions:
        click.echo(f"version {version}: incomplete (training stopped before the gate); {done}: no alias points at it")
    for run_id in found.runs:
        click.echo(f"run {run_id}: left RUNNING by a process that is gone; {done}: ended FAILED" if not dry_run
                   else f"run {run_id}: left RUNNING by a process that is gone")
    for folder in metrics:
        click.echo(f"metrics folder of a stopped server: {folder}; {done}")
    if not (found.versions or found.runs or metrics):
        click.echo("nothing to clean: no incomplete version, no run left RUNNING, no stale metrics folder")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per version.")
@_command
def compare(settings: Settings, as_json: bool) -> None:
    """Registered versions with their holdout metrics, aliases, trigger and gate decision."""
    import json

    from mlops import reporting, tracking

    versions = tracking.list_versions(settings.model.name)
    if as_json:
        click.echo(json.dumps(tracking.summaries_as_dicts(versions), indent=2))
    else:
        reporting.print_versions(settings.model.name, versions, settings.model.metric)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for scripts.")
@_command
def status(settings: Settings, as_json: bool) -> None:
    """One screen: what is deployed and its last hour, the aliases and their gate decisions, the last check, the schedules."""
    import json

    from mlops import reporting
    from mlops.status import project_status

    found = project_status(settings)
    if as_json:
        click.echo(json.dumps(found.as_dict(), indent=2))
    else:
        reporting.print_status(found)


@cli.command()
@click.argument("version")
@click.option("--force", is_flag=True, help="Move even if the gate's checks fail.")
@click.option("--reason", default="", help="Why, for the audit log.")
@click.option("--to", "to", help="Copy VERSION (this profile's champion) into that profile's registry and promote it there.")
@_command
def promote(settings: Settings, version: str, force: bool, reason: str, to: str | None) -> None:
    """Make VERSION the champion, through the gate's checks (margin and floors) unless --force."""
    from mlops import tracking
    from mlops.progress import progress

    if to is not None:
        _promote_to(settings, version, to, force, reason)
        return
    with progress(f"promoting v{version}"):
        decision = tracking.promote_version(settings, version, _holdout(settings), force=force, reason=reason)
    _report_move(decision, "promote")
    _follow_champion(settings)


def _promote_to(source: Settings, version: str, to: str, force: bool, reason: str) -> None:
    from mlops.environment import check_services
    from mlops.progress import progress
    from mlops.promotion import promote_to

    target = _settings(click.get_current_context(), to)
    if target.mlflow_tracking_uri == source.mlflow_tracking_uri and target.model.name == source.model.name:
        raise ConfigError(f"Profile '{to}' uses the same registry and model name as '{source.environment}': nothing to copy. "
                          "Give the profile its own tracking_uri or model.name.")  # fmt: skip
    check_services(target)
    with progress(f"promoting {source.environment} v{version} to {to}"):
        decision = promote_to(source, version, target, _holdout(target), force=force, reason=reason)
    click.echo(f"{to}: {target.model.name} v{decision.challenger_version} copied from {source.environment} v{version}.")
    _report_move(decision, "promote")


@cli.command()
@click.option("--force", is_flag=True, help="Move even if the floors are not met.")
@click.option("--reason", default="", help="Why, for the audit log.")
@_command
def rollback(settings: Settings, force: bool, reason: str) -> None:
    """Give the champion alias back to the previous version (floors checked unless --force)."""
    from mlops import tracking
    from mlops.progress import progress

    with progress("rolling back"):
        decision = tracking.rollback(settings, _holdout(settings), force=force, reason=reason)
    _report_move(decision, "rollback")
    _follow_champion(settings)


def _holdout(settings: Settings) -> Any:
    """The deterministic holdout of the training file: the one the gate scores versions on."""
    from mlops import contract, data, training

    frame = data.load_table(settings.data.training)
    return training.split_for_contract(frame, contract.load_contract(settings.data.contract), settings.model)


def _follow_champion(settings: Settings) -> None:
    """A running deployment of the champion alias moves to the new champion, through the safe swap."""
    from mlops import deployment
    from mlops.tracking import CHAMPION

    status = deployment.deployment_status(settings)
    if status.state is None or not status.backend_alive or status.state.alias != CHAMPION:
        return
    from mlops.progress import progress

    with progress("swapping the deployment to the new champion"):
        state = deployment.deploy(settings, CHAMPION)
    click.echo(f"deployed v{state.backend.version} at {state.url} (replaced v{state.replaced_version} through the safe swap)")


def _report_move(decision: Any, kind: str) -> None:
    if not decision.promoted:
        click.secho(f"{kind} refused: {decision.reason}. Use --force to move anyway.", fg="red", err=True)
        sys.exit(ValidationFailed.exit_code)
    was = f" (was v{decision.champion_version}, now 'previous')" if decision.champion_version else ""
    click.echo(f"champion → v{decision.challenger_version}{was}: {decision.reason}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, newest first.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the newest N entries.")
@_command
def audit(settings: Settings, as_json: bool, limit: int | None) -> None:
    """The audit log, newest first: promotions, rollbacks, deployments, schedule changes, retrain triggers."""
    import json

    from mlops.audit import read_audit

    entries = read_audit(settings, limit=limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
    elif not entries:
        click.echo(f"No audited changes yet in {settings.state_dir}.")
    for entry in [] if as_json else entries:
        version = f"v{entry['version']}" if entry.get("version") else "-"
        click.echo(f"{entry['at']}  {entry['by']}  {entry['kind']}  {entry['model']} {version}  {entry['reason']}")


@cli.command()
@click.option("--version", "model_version", metavar="N", help="Show the model card of registered version N.")
@click.option("--open", "open_it", is_flag=True, help="Open the newest report (with --version: that card) in a browser.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="List the newest N reports.")
@_command
def report(settings: Settings, model_version: str | None, open_it: bool, limit: int) -> None:
    """The newest reports under the state folder (drift, validation, model cards), newest first."""
    import webbrowser

    from mlops.errors import RegistryError
    from mlops.reporting import find_reports, model_card_of, print_reports

    reports = find_reports(settings.reports_dir, settings.mlflow_artifact_dir)
    if model_version is not None:
        card = model_card_of(reports, model_version) or _fetched_card(settings, model_version)
        if card is None:
            raise RegistryError(f"No model card of version {model_version} under {settings.mlflow_artifact_dir}. "
                                "Check the version with `mlops compare`.")
        click.echo(f"Model card of v{card.version}: {card.path}\n")
        click.echo(card.path.read_text(encoding="utf-8"))
        reports = [card]
    elif not reports:
        click.echo(f"No reports yet in {settings.reports_dir}. `mlops train` and `mlops monitor` write them.")
        return
    else:
        print_reports(reports[:limit])
    if open_it:
        webbrowser.open(reports[0].path.resolve().as_uri())


def _fetched_card(settings: Settings, version: str) -> Any:
    """The card of ``version`` from the configured tracking server (its artifacts are not on this disk),
    saved under the reports folder so it can be opened; None with the local store."""
    from datetime import datetime

    from mlops import tracking
    from mlops.reporting import ReportFile

    if settings.tracking_uri is None or settings.mlflow_tracking_uri.startswith(("sqlite:", "file:")):
        return None
    version = str(version).strip().lstrip("v")
    text = tracking.read_model_card(settings.model.name, version)
    if text is None:
        return None
    path = settings.reports_dir / f"model-card-{settings.model.name}-v{version}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return ReportFile("model card", path, datetime.now(), version)


@cli.group()
def stack() -> None:
    """The server stack on this machine: PostgreSQL, MLflow and Prefect servers on it, a worker."""


@stack.command("up")
@_command(services=False)
def stack_up(settings: Settings) -> None:
    """Start the stack (what is not running yet) and print the profile that uses it."""
    from mlops import stack as server_stack

    _interrupt_on_termination()  # SIGTERM as Ctrl-C: the servers started so far are stopped
    try:
        servers = server_stack.stack_up(settings, progress=lambda name: click.echo(f"starting {name}...", err=True))
    except KeyboardInterrupt:
        click.secho("stack up interrupted; every server it had started was stopped.", fg="yellow", err=True)
        sys.exit(130)
    _show_stack(settings, [(server, True) for server in servers])
    import yaml

    profile = yaml.safe_dump({"environments": {"staging": settings.stack.profile()}}, sort_keys=False)
    click.echo(f"\nA profile in mlops.yaml that uses it (then `mlops --env staging train`):\n{profile}", nl=False)


@stack.command("status")
@_command(services=False)
def stack_status(settings: Settings) -> None:
    """Show each server of the stack; exit 4 when one is down."""
    from mlops import stack as server_stack

    servers = server_stack.stack_status(settings)
    if not servers:
        click.echo("The stack is not running. Start it with `mlops stack up`.")
        sys.exit(4)
    _show_stack(settings, servers)
    if not all(up for _, up in servers):
        sys.exit(4)


@stack.command("down")
@_command(services=False)
def stack_down(settings: Settings) -> None:
    """Stop the stack; its databases and artifacts stay for the next `mlops stack up`."""
    from mlops import stack as server_stack

    stopped = server_stack.stack_down(settings)
    click.echo(f"Stopped {', '.join(server.name for server in stopped)}." if stopped else "The stack was not running.")


def _show_stack(settings: Settings, servers: list[Any]) -> None:
    for server, up in servers:
        where = server.url or (f"127.0.0.1:{server.port}" if server.port else "")
        click.echo(f"  {server.name:<9} {'up' if up else 'DOWN':<5} pid {server.pid:<8} {where}  (log: {server.log})")


@cli.group("env")
def env_group() -> None:
    """The named profiles of mlops.yaml (environments:) and what each resolves to."""


@env_group.command("list")
@click.pass_context
def env_list(ctx: click.Context) -> None:
    """List the profiles; the one in use (--env / MLOPS_ENV) is starred."""
    from mlops.config import environment_names

    config, _, project, environment = ctx.find_root().obj
    try:
        names = environment_names(config, project)
    except MlopsError as exc:
        _say(None, "error", str(exc))
        sys.exit(exc.exit_code)
    for name in names:
        click.echo(f"{'*' if name == (environment or 'local') else ' '} {name}")


@env_group.command("show")
@click.argument("name", required=False)
@click.pass_context
def env_show(ctx: click.Context, name: str | None) -> None:
    """Print the settings a profile resolves to (default: the one in use), secrets masked."""
    try:
        settings = _settings(ctx, name)
    except MlopsError as exc:
        _say(None, "error", str(exc))
        sys.exit(exc.exit_code)
    click.echo(_settings_json(settings))


@cli.group()
def k8s() -> None:
    """Kubernetes manifests for the packaged model server (docs/cluster.md)."""


@k8s.command("render")
@click.option("--image", help="Image to run (default: kubernetes.image, else the packaged Bento's name:version).")
@click.option("--out", type=click.Path(file_okay=False), help="Folder for the YAML files (default: STATE/k8s).")
@_command
def k8s_render(settings: Settings, image: str | None, out: str | None) -> None:
    """Write the Deployment, Service, autoscaler and disruption budget of the serving model, one YAML file each."""
    from mlops import kubernetes

    folder = Path(out) if out else settings.state_dir / "k8s"
    manifests = kubernetes.render_manifests(settings, kubernetes.image_for(settings, image))
    for path in kubernetes.write_manifests(manifests, folder):
        click.echo(f"Wrote {path}")
    click.echo(f"  kubectl apply -n {settings.kubernetes.namespace} -f {folder}")


@cli.command("config")
@click.option("--schema", is_flag=True, help="Print the JSON schema instead of the effective config.")
@click.pass_context
def show_config(ctx: click.Context, schema: bool) -> None:
    """Print the effective configuration (or its JSON schema)."""
    import json

    from mlops.config import Settings

    try:
        settings = _settings(ctx)
    except MlopsError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    click.echo(json.dumps(Settings.model_json_schema(), indent=2) if schema else _settings_json(settings))


def _settings_json(settings: Settings) -> str:
    """The effective settings as JSON: secrets as ``**********``, the contract task's defaults filled in."""
    import json

    from mlops.environment import redact

    shown = settings.model_dump(mode="json")
    if settings.tracking_uri is not None:  # the server, its credentials masked
        shown["tracking_uri"] = redact(settings.tracking_uri.get_secret_value())
    shown["model"]["primary_metric"] = settings.model.metric  # what training uses, not null
    if not settings.model.candidates:
        shown["model"]["estimator"] = settings.model.estimator_name
    return json.dumps(shown, indent=2)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="mlops")
