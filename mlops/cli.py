"""The ``mlops`` command line.

Exit codes: 0 success (a challenger that is not promoted is a normal outcome),
1 a gate blocked the run, 2 usage, configuration or data-file error, 3 the endpoint
failed to start or a deployed version was rejected, 4 a configured server (MLflow, Prefect) does not answer.
Everything heavy is imported inside the commands, so ``mlops --help`` is instant.
The CLI is the top layer: it may import ``flows``; the library modules may not.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mlops.errors import MlopsError, ValidationFailed

if TYPE_CHECKING:
    from mlops.config import Settings

__all__ = ["cli", "main"]


def _settings(ctx: click.Context) -> Settings:
    # pydantic is imported here, not at start-up, so `mlops --help` stays instant.
    from mlops.config import load_settings

    config, state_dir = ctx.find_root().obj
    return load_settings(config, state_dir)


def _command(function: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command with the tools bound to the state folder; turn MlopsError into a clean exit."""

    @functools.wraps(function)
    @click.pass_context
    def wrapper(ctx: click.Context, /, **kwargs: Any) -> Any:
        from mlops.environment import check_services, tool_environment

        try:
            settings = _settings(ctx)
            check_services(settings)
            with tool_environment(settings):
                return function(settings, **kwargs)
        except MlopsError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False), envvar="MLOPS_CONFIG", help="Config file (YAML).")
@click.option("--state-dir", type=click.Path(file_okay=False), envvar="MLOPS_STATE_DIR", help="State folder.")
@click.pass_context
def cli(ctx: click.Context, config: str | None, state_dir: str | None) -> None:
    """Validate, train, register, serve and monitor models: the whole ML loop."""
    ctx.obj = (config, state_dir)


@cli.command()
@click.argument("data", required=False, type=click.Path(dir_okay=False))
@_command
def validate(settings: Settings, data: str | None) -> None:
    """Check DATA (default: the training file) against the expectation suite."""
    from mlops import validation

    path = Path(data) if data else settings.data.training
    result = validation.validate_file(path, settings.data.suite)
    report = validation.write_html_report(result, settings.reports_dir / "validation-latest.html")
    click.echo(result.summary())
    click.echo(f"HTML report: {report}")
    if not result.success:
        sys.exit(ValidationFailed.exit_code)


@cli.command()
@click.option("--data", type=click.Path(dir_okay=False), help="Training data (default: data.training).")
@_command
def train(settings: Settings, data: str | None) -> None:
    """Validate, train, register a new version and run the champion gate."""
    from flows.training import training_flow

    from mlops import reporting

    outcome = training_flow(settings, data_path=Path(data) if data else None)
    reporting.print_training(outcome)


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: serving.port).")
@click.option("--alias", help="Registry alias to serve (default: serving.alias).")
@_command
def serve(settings: Settings, port: int | None, alias: str | None) -> None:
    """Serve the model behind ALIAS on 127.0.0.1 until interrupted."""
    from mlops import serving

    alias = alias or settings.serving.alias
    version = serving.resolve_alias(settings.model.name, alias)
    tag = serving.import_model(settings.model.name, version)
    server = serving.start_server(settings, tag, port=port or settings.serving.port)
    click.echo(f"Serving {settings.model.name} v{version} ({alias}) at {server.url}  (Ctrl-C to stop)")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        click.echo("Stopping.")
    finally:
        server.stop()


@cli.command()
@click.option("--alias", help="Registry alias to package (default: serving.alias).")
@_command
def package(settings: Settings, alias: str | None) -> None:
    """Build a Bento (service, model, pinned dependencies) and its Docker build context."""
    from mlops import packaging

    result = packaging.package(settings, alias)
    click.echo(f"Built Bento {result.bento_tag} with model {result.model_tag} (registry version {result.version})")
    click.echo(f"Docker build context: {result.build_context}")
    click.echo(f"  docker build -t {result.bento_tag.replace(':', '-')} {result.build_context}")


@cli.group(invoke_without_command=True)
@click.option("--alias", help="Registry alias to deploy (default: serving.alias).")
@click.pass_context
def deploy(ctx: click.Context, alias: str | None) -> None:
    """Deploy ALIAS in the background at serving.port; swap versions without dropping requests.

    The new version is started beside the running one and smoke-tested before it gets
    traffic; a version that fails is rejected and the alias rolls back.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(_deploy, alias=alias)


@_command
def _deploy(settings: Settings, alias: str | None) -> None:
    from mlops import deployment

    before = deployment.deployment_status(settings).state
    state = deployment.deploy(settings, alias)
    backend = state.backend
    if state == before:
        click.echo(f"Already serving {state.model_name} v{backend.version} ({state.alias}) at {state.url}")
        return
    replaced = f"; replaced v{state.replaced_version}" if state.replaced_version else ""
    click.echo(f"Deployed {state.model_name} v{backend.version} ({state.alias}) at {state.url}{replaced}")
    click.echo(f"  ready in {backend.ready_seconds:g} s; model server pid {backend.pid} on port {backend.port}")


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
    click.echo(f"  proxy pid {state.proxy_pid}: {'up' if status.proxy_alive else 'DOWN'}")
    click.echo(f"  model server pid {state.backend.pid}: {'up' if status.backend_alive else 'DOWN'}")
    click.echo(f"  ready: {'yes' if status.ready else 'NO'}")
    if not status.healthy:
        sys.exit(3)


@deploy.command("stop")
@_command
def deploy_stop(settings: Settings) -> None:
    """Stop the deployment (model server and proxy)."""
    from mlops import deployment

    state = deployment.stop_deployment(settings)
    click.echo(f"Stopped {state.model_name} v{state.backend.version}." if state else "Nothing was deployed.")


@cli.command()
@click.option("--current", type=click.Path(dir_okay=False), help="Current data (default: logged predictions).")
@_command
def monitor(settings: Settings, current: str | None) -> None:
    """Measure drift against the training data; retrain when it passes the threshold."""
    from flows.monitoring import monitoring_flow
    from mlops import reporting

    outcome = monitoring_flow(settings, current_path=Path(current) if current else None)
    reporting.print_monitoring(outcome)


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@_command
def ui(settings: Settings, port: int) -> None:
    """Open the MLflow UI on 127.0.0.1 for the project's store."""
    import os

    args = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", settings.mlflow_tracking_uri]
    args += ["--host", "127.0.0.1", "--port", str(port)]
    click.echo(f"MLflow UI at http://127.0.0.1:{port} (Ctrl-C to stop)")
    os.execv(sys.executable, args)


@cli.command()
@_command
def demo(settings: Settings) -> None:
    """Run the whole loop: validate, train, serve, send traffic, detect drift, retrain."""
    from flows.demo import run_demo
    from mlops import reporting

    reporting.print_demo(run_demo(settings))


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
    shown = Settings.model_json_schema() if schema else settings.model_dump(mode="json")
    click.echo(json.dumps(shown, indent=2))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="mlops")
