"""The ``rlkit`` command line: a thin typer app over the library.

Each command lives in its own module and imports ray and torch only inside
the function body, so ``rlkit --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
import traceback

import click
import typer

from rlkit.cli import output
from rlkit.errors import RlkitError

app = typer.Typer(
    name="rlkit",
    help="Run reinforcement-learning experiments on Ray clusters.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    from rlkit.cli import env, launch, logs, status, stop, submit, sweep, teardown, train

    launch.register(app)
    submit.register(app)
    status.register(app)
    logs.register(app)
    stop.register(app)
    env.register(app)
    teardown.register(app)
    train.register(app)
    sweep.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the process exit code instead of raising."""
    args = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere on the line, so it is taken out before typer.
    debug = "--debug" in args or os.environ.get("RLKIT_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    try:
        result = app(args=args, prog_name="rlkit", standalone_mode=False)
    except RlkitError as err:
        if debug:
            traceback.print_exc()
        output.error(str(err))
        return err.exit_code
    except click.exceptions.UsageError as err:
        err.show()
        return 2
    except click.exceptions.Abort:
        output.error("aborted")
        return 130
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())
