"""The ``rlkit`` command line: a thin typer app over the library.

Each command lives in its own module and imports ray and torch only inside
the function body, so ``rlkit --help`` stays fast.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import traceback

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
    from rlkit.cli import check, env, fetch, launch, logs, runs, status, stop, submit, sweep, teardown, train

    launch.register(app)
    submit.register(app)
    status.register(app)
    logs.register(app)
    stop.register(app)
    fetch.register(app)
    env.register(app)
    teardown.register(app)
    train.register(app)
    runs.register(app)
    sweep.register(app)
    check.register(app)


_register()


def _click_class(name: str) -> type[Exception]:
    """The CLI library's own ``name`` exception, wherever this typer keeps it.

    typer up to 0.24 raised click's exceptions; later ones vendor click as
    ``typer._click``. Both keep ``typer.BadParameter`` public, and its bases
    are the classes that typer raises for every usage error.
    """
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == name)


_USAGE_ERROR = _click_class("UsageError")
_CLICK_EXCEPTION = _click_class("ClickException")


def _command_path(args: list[str]) -> str:
    """``rlkit launch local`` for the words of ``args`` that name (sub)commands."""
    words, command = ["rlkit"], typer.main.get_command(app)
    for arg in args:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        words.append(arg)
        command = sub
    return " ".join(words)


def usage_line(err: Exception, args: list[str]) -> str:
    """A usage error as one line that names the command and where its help is."""
    # The option parser raises some errors (a missing option value) without a context.
    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx is not None else _command_path(args)
    message = " ".join(err.format_message().split()).rstrip(".")  # type: ignore[attr-defined]
    message = message[:1].lower() + message[1:]
    return f"{command}: {message} (see '{command} --help')"


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
    except _USAGE_ERROR as err:
        if type(err).__name__ == "NoArgsIsHelpError":
            # A command group given no subcommand: its help is the answer (typer's rich
            # help is printed already; click's plain help is the message).
            if help_text := err.format_message().strip():  # type: ignore[attr-defined]
                output.err_console.print(help_text, markup=False, highlight=False)
            return 2
        output.error(usage_line(err, args))
        return 2
    except _CLICK_EXCEPTION as err:
        output.error(" ".join(err.format_message().split()))  # type: ignore[attr-defined]
        return 1
    except typer.Abort:
        output.error("aborted")
        return 130
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001  (the last line of defence: no traceback without --debug)
        if debug:
            traceback.print_exc()
        output.error(f"internal error, {type(err).__name__}: {' '.join(str(err).split())} (rerun with --debug "
                     "for the traceback, and please report it)")
        return 1
    return result if isinstance(result, int) else 0


def entry() -> None:
    """The ``rlkit`` command: main(), then the exit Python would make, less
    its final teardown. Once torch and Ray are loaded, freeing their modules
    and running their libraries' destructors takes 1-2 s after the last
    line of output (scripts/bench/README.md, "Start-up and exit"); nothing
    rlkit writes waits for it. Threads still running are waited for, and the
    atexit handlers run, as at a normal exit."""
    code = main()
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
