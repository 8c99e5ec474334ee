"""``rlkit train`` and ``rlkit eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rlkit.cli import output
from rlkit.errors import BadInputError


def _checked_address(address: str) -> str:
    from rlkit.clusters.address_file import parse_init_address

    try:
        return parse_init_address(address)
    except ValueError as err:
        raise BadInputError(f"--address: {err}", "e.g. --address 127.0.0.1:6379, or leave it out to run here") from None


def train(
    config: Optional[Path] = typer.Argument(None, help="Training config YAML (not needed with --resume)."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set algo.lr=1e-3 (repeatable)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run name (default: the config file's name)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory from its latest checkpoint."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda (default: the config's, auto)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to run on (default: RAY_ADDRESS, else an embedded local Ray)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_: bool = typer.Option(False, "--json", help="Print a JSON summary at the end."),
) -> int:
    """Train a PPO or GRPO agent.

    Example: [bold]rlkit train configs/ppo_cartpole.yaml --set algo.lr=1e-3[/]
    """
    from rlkit.train.session import prepare_process

    prepare_process(address)
    from rlkit.config import load_train_config
    from rlkit.train.checkpoint import load_run_config
    from rlkit.train.run import train as run_train

    if address is not None:
        address = _checked_address(address)
    overrides = list(set_)
    if name is not None:
        overrides.append(f"name={name}")
    if device is not None:
        overrides.append(f"device={device}")
    if resume is not None:
        cfg = load_run_config(resume, overrides)
    elif config is None:
        raise BadInputError("missing CONFIG", "e.g. rlkit train configs/ppo_cartpole.yaml, or --resume RUN_DIR")
    else:
        cfg = load_train_config(config, overrides)

    try:
        summary = run_train(cfg, address=address, resume=resume, quiet=quiet or json_, notify=output.note)
    except KeyboardInterrupt:
        # Ctrl-C before the training loop, or a second one inside it: nothing more is saved.
        output.note("interrupted: stopped without a new checkpoint (--resume continues from the last one saved)")
        return 130
    if json_:
        output.print_json(summary.to_dict())
    elif not quiet:
        ret = "-" if summary.rolling_return is None else f"{summary.rolling_return:.1f}"
        output.console.print(
            f"[bold]{summary.name}[/] stopped by {summary.stop_reason}: {summary.global_step:,} steps, "
            f"{summary.updates} updates, {summary.wall_s:.1f} s, {summary.sps:,.0f} SPS, return {ret}\n"
            f"run: {summary.run_dir}\n"
            f"next: rlkit eval {summary.run_dir}   |   tensorboard --logdir {summary.run_dir}/tb"
        )
    if summary.stop_reason == "interrupted":
        output.note(f"interrupted: checkpoint saved; continue with rlkit train --resume {summary.run_dir}")
        return 130
    return 0


def evaluate(
    target: Path = typer.Argument(..., help="A run directory or a checkpoint file."),
    episodes: int = typer.Option(10, "--episodes", "-n", min=1, max=100_000,
                                 help="Episodes to run (two-seat games: games per seat)."),
    opponent: Optional[str] = typer.Option(
        None, "--opponent",
        help="Two-seat games: random (the default), or a run directory or checkpoint of the same game."),
    json_: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Evaluate a trained run, acting deterministically: its return, each policy's and the
    team's return (multi-agent), or win/draw/loss rates as first and second player (games).

    Example: [bold]rlkit eval runs/ppo_cartpole-20261123-101500 --episodes 20[/]
    or [bold]rlkit eval runs/selfplay_tictactoe-20261123-101500 --opponent random -n 200[/]
    """
    from rlkit.train.evaluate import GameEvalResult, MultiAgentEvalResult
    from rlkit.train.evaluate import evaluate as run_eval

    result = run_eval(target, episodes, notify=output.note, opponent=opponent)
    if json_:
        output.print_json(result.to_dict())
    elif isinstance(result, GameEvalResult):
        first, second = result.first, result.second
        output.console.print(
            f"vs {result.opponent}, {result.games_per_seat} games per seat: "
            f"as first: win {first.win:.1%}, draw {first.draw:.1%}, loss {first.loss:.1%}; "
            f"as second: win {second.win:.1%}, draw {second.draw:.1%}, loss {second.loss:.1%}  ({result.checkpoint})"
        )
    elif isinstance(result, MultiAgentEvalResult):
        per_policy = ", ".join(f"{pid} {ret:.2f}" for pid, ret in result.policy_returns.items())
        output.console.print(
            f"{result.episodes} episodes: team return {result.team_return:.2f} ± {result.std_team_return:.2f}, "
            f"length {result.mean_length:.1f}; per policy: {per_policy}  ({result.checkpoint})"
        )
    else:
        output.console.print(
            f"{result.episodes} episodes: return {result.mean_return:.2f} ± {result.std_return:.2f}, "
            f"length {result.mean_length:.1f}  ({result.checkpoint})"
        )


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("eval")(evaluate)
