"""Every command, driven with generated malformed arguments and files.

Whatever the input, rlkit answers with an exit code in {0, 1, 2, 3}, never a
traceback, and bad input (exit 2) as one line. The commands run in process
through ``rlkit.cli.main`` (fast), plus a few runs of the installed entry point.

Nothing here can start work or reach the network: creating commands always
get ``--dry-run`` (right after the command words, so a generated ``--`` cannot
turn it into an argument), training always ends with an impossible stop
condition, the address files hold loopback addresses and unparseable junk only
(no host names to resolve), and the cluster records are junk with no
processes or directories in them. Counted inputs are written to a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlkit.cli import main
from tests.cli_helpers import RLKIT
from tests.conftest import CONFIGS

EXIT_CODES = {0, 1, 2, 3}
IN_PROCESS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# The words that make each command safe to run with any arguments after them.
COMMANDS = {
    "launch local": ["launch", "local", "--dry-run"],
    "launch onprem": ["launch", "onprem", "--dry-run"],
    "submit": ["submit", "--dry-run"],
    "status": ["status"],
    "logs": ["logs"],
    "stop": ["stop", "-y"],
    "fetch": ["fetch"],
    "env": ["env"],
    "teardown": ["teardown", "-y"],
    "train": ["train"],
    "eval": ["eval"],
    "sweep": ["sweep", "--dry-run"],
    "check": ["check"],
    "runs": ["runs"],
    "(none)": [],
}
# Appended to train: stop.total_steps=0 never validates, so no generated config trains.
NEVER_TRAIN = ["--set", "stop.total_steps=0"]
OPTIONS = {
    "launch local": ["--name", "-n", "--num-clusters", "-N", "--cpus", "--gpus", "--host", "--no-token", "--json"],
    "launch onprem": ["--head", "--workers", "--ssh-user", "--ssh-key", "--name", "--config", "--timeout", "--json"],
    "submit": ["--cluster", "-c", "--all", "--working-dir", "--name", "--cpus", "--gpus", "--env", "-e",
               "--runs-dir", "--json", "--timeout", "--"],
    "status": ["--json", "--interval", "--timeout", "--all-jobs"],
    "logs": ["--tail", "-n", "--cluster", "-c", "--timeout"],
    "stop": ["--cluster", "-c", "--all-jobs", "--json", "--timeout"],
    "fetch": ["--to", "--checkpoints", "latest", "all", "--follow", "-f", "--cluster", "-c", "--json", "--timeout"],
    "env": ["--unset", "--json"],
    "teardown": ["--all", "--json"],
    "train": ["--set", "--name", "--resume", "--device", "--quiet", "--json"],
    "eval": ["--episodes", "-n", "--opponent", "--json"],
    "sweep": ["--set", "--cluster", "-c", "--all", "--name", "--resume", "--quiet", "--json"],
    "check": ["--all", "--expect", "--json", "--timeout"],
    "runs": ["--json", "--plot", "-o", "--output", "--x", "steps", "time", "curves.png"],
    "(none)": ["--version", "-x", "launch", "nosuch"],
}
NUMBERS = ["inf", "-inf", "nan", ".inf", "-1", "0", "1e400", "12345678901234567890123456", "1.0e+12", "0x10",
           "1_000", "", " ", "3.5", "-0"]
SET_KEYS = ["algo.lr", "seed", "rollout.fragment_length", "rollout.envs_per_worker", "rollout.num_workers",
            "stop.total_steps", "stop.time_budget_s", "runs_dir", "env.kwargs.x", "model.hidden_sizes", "algo.name",
            "num_samples", "base.algo.lr", "space.algo.lr", "a..b", ".", "algo", "x" * 300]
SET_VALUES = [*NUMBERS, ".nan", "[" * 3000 + "]" * 3000, "{a: {b: {c: [1, 2]}}}", "[1, [2, [3]]]", "&a [*a]",
              "'unterminated", "!!python/object:os.system", "~", "true", "[]", "{}", "1.0e+30"]
# Text that cannot be read as a host name or an IP address (so nothing is ever resolved or dialled).
JUNK = st.text(alphabet=st.sampled_from(list("!#$%&*()[]{}<>|;'\"`^~=+é☃\t ")), max_size=12)
TOKENS = st.one_of(JUNK, st.sampled_from(NUMBERS), st.sampled_from(["a b", "x.yaml", "/", "~", "run-1", "lab-a"]))

ADDRESS_LINES = ["# Cluster: a", "# Cluster: ", "# Cluster: a b", "# Cluster: é☃", "#", "127.0.0.1:1",
                 "http://127.0.0.1:1", "127.0.0.1", "127.0.0.1:99999", "127.0.0.1:-1", "http://[::1]:1", "ray://127.0.0.1:1",
                 "127.0.0.1 6379", ":", "http://", "", "   ", "\x00", "[]", "{}"]
RECORDS = ["[]", "null", '"a"', "{", "{}", '{"name": "a"}', '{"name": 1, "provider": []}', "1e999", "\x00\x01",
           "[" * 5000]
CONFIG_TEXTS = ["", "[]", "- 1\n", "algo: [ppo\n", "{a: 1", "seed: 12345678901234567890123456\n",
                "algo:\n  lr: .inf\n", "rollout:\n  fragment_length: 1.0e+12\n", "a: " + "[" * 5000 + "]" * 5000 + "\n",
                "a: &a [1]\nb: [*a, *a]\n", "runs_dir: /dev/null\n", "\ufeffseed: 1\n", "\x00", "env: 7\n",
                "base: nowhere.yaml\n", "space:\n  algo.lr: {uniform: [0, .inf]}\n", "num_samples: 1.0e+12\n",
                "jobs:\n  - entrypoint: x\n    cpus: .nan\n", "entrypoint: ''\n", "%YAML 9.9\n---\n"]


@pytest.fixture(scope="module")
def tried() -> Iterator[set[str]]:
    """The distinct inputs that the in-process properties ran."""
    yield set()


@pytest.fixture(autouse=True)
def _in_an_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # submit packs the working dir ("." by default): an empty one is quick.
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("RLKIT_RUNS_DIR", str(tmp_path / "runs"))


def check_answer(code: int, err: str, out: str) -> None:
    """The contract: a known exit code, no traceback, bad input as one line."""
    assert code in EXIT_CODES, (code, err)
    assert "Traceback" not in err + out and "internal error" not in err, err
    if code == 2 and "Usage:" not in out + err:  # a group without its subcommand prints its help
        lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
        assert len(lines) == 1 and lines[0].startswith("error: "), err


def run(capsys: pytest.CaptureFixture[str], tried: set[str], argv: list[str], files: object = ()) -> None:
    tried.add(json.dumps([argv, files], sort_keys=True, default=str))
    code = main(argv)
    captured = capsys.readouterr()
    check_answer(code, captured.err, captured.out)


def write_files(base: Path, address: list[str], home: str | None, records: list[str]) -> None:
    """The address file and $RLKIT_HOME as generated (home: None, a file, or a dir of records)."""
    Path(os.environ["RLKIT_RAY_ADDRESS_FILE"]).write_text("\n".join(address) + "\n")
    home_path = Path(os.environ["RLKIT_HOME"])
    if home is not None:
        home_path.write_text(home)
    elif records:
        (home_path / "clusters").mkdir(parents=True)
        for i, text in enumerate(records):
            (home_path / "clusters" / f"{'a' if i == 0 else f'c{i}'}.json").write_text(text)


@st.composite
def argv_for(draw: st.DrawFn, command: str) -> list[str]:
    pool = st.one_of(st.sampled_from(OPTIONS[command]), TOKENS,
                     st.builds(lambda k, v: f"{k}={v}", st.sampled_from(SET_KEYS), st.sampled_from(SET_VALUES)))
    words = draw(st.lists(pool, max_size=6))
    # Flags that would keep a command running (watch, follow) stay out.
    words = [w for w in words if w not in ("--watch", "-w", "--follow", "-f")]
    return [*COMMANDS[command], *words, *(NEVER_TRAIN if command == "train" else [])]


@IN_PROCESS
@given(data=st.data())
@pytest.mark.parametrize("command", list(COMMANDS))
def test_junk_arguments(capsys, tried, command: str, data: st.DataObject) -> None:
    run(capsys, tried, data.draw(argv_for(command)))


@IN_PROCESS
@given(address=st.lists(st.one_of(st.sampled_from(ADDRESS_LINES), JUNK.map(lambda t: f"# Cluster: {t}"), JUNK),
                        max_size=6),
       home=st.one_of(st.none(), st.sampled_from(["", "x"])),
       records=st.lists(st.sampled_from(RECORDS), max_size=3),
       command=st.sampled_from(["status", "env", "teardown", "submit", "stop", "logs", "launch local", "sweep"]),
       extra=st.sampled_from([[], ["a"], ["--all"], ["--json"], ["a", "--json"], ["--", "python", "x.py"]]))
def test_malformed_address_files_and_homes(capsys, tried, tmp_path_factory, address: list[str], home: str | None,
                                           records: list[str], command: str, extra: list[str]) -> None:
    base = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RLKIT_HOME", str(base / "home"))
        patch.setenv("RLKIT_RAY_ADDRESS_FILE", str(base / "ray_address"))
        write_files(base, address, home, records)
        args = [*COMMANDS[command], *extra]
        if command == "sweep":
            args += [str(CONFIGS / "sweeps" / "ppo_cartpole_asha.yaml"), "--set", "num_samples=1"]
        run(capsys, tried, args, [address, home, records])


@IN_PROCESS
@given(text=st.one_of(st.sampled_from(CONFIG_TEXTS), st.text(max_size=200),
                      st.recursive(st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), JUNK),
                                   lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                           st.dictionaries(st.sampled_from(SET_KEYS + ["algo", "env"]),
                                                                           inner, max_size=3)),
                                   max_leaves=12).map(json.dumps)),
       how=st.sampled_from(["train", "train --resume", "eval", "sweep", "sweep --resume", "submit", "launch onprem"]))
def test_malformed_files(capsys, tried, tmp_path_factory, text: str, how: str) -> None:
    base = tmp_path_factory.mktemp("files")
    path = base / ("jobs.yaml" if how == "submit" else "f.yaml")
    path.write_text(text)
    if how.endswith("--resume"):
        # A run or sweep directory whose saved config (and checkpoint) are the junk.
        (base / "checkpoints").mkdir()
        for name in ("config.yaml", "sweep.yaml", "checkpoints/latest.pt", "checkpoints/ckpt_000001.pt"):
            (base / name).write_text(text)
    args = {
        "train": ["train", str(path), *NEVER_TRAIN],
        "train --resume": ["train", "--resume", str(base), *NEVER_TRAIN],
        "eval": ["eval", str(path), "-n", "1"],
        "sweep": ["sweep", "--dry-run", str(path)],
        "sweep --resume": ["sweep", "--resume", str(base), "--dry-run"],
        "submit": ["submit", "--dry-run", str(path)],
        "launch onprem": ["launch", "onprem", "--dry-run", "--head", "127.0.0.1", "--ssh-user", "u",
                          "--ssh-key", str(path), "--config", str(path)],
    }[how]
    run(capsys, tried, args, text)


def test_the_suite_tried_many_distinct_inputs(tried: set[str], tmp_path_factory: pytest.TempPathFactory) -> None:
    count_file = tmp_path_factory.getbasetemp() / "bad_input_fuzz_count.txt"
    count_file.write_text(f"{len(tried)} distinct inputs\n")
    print(f"bad-input fuzz: {len(tried)} distinct inputs ({count_file})")
    assert len(tried) > 500


@settings(max_examples=6, deadline=None, derandomize=True, database=None)
@given(argv=st.one_of(*(argv_for(c) for c in ("launch local", "status", "train", "sweep", "(none)"))))
def test_the_installed_command_answers_junk_in_one_line(argv: list[str]) -> None:
    result = subprocess.run([RLKIT, *argv], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=120, env={**os.environ, "COLUMNS": "200"}, check=False)
    check_answer(result.returncode, result.stderr, result.stdout)


def test_the_installed_command_gives_usage_errors_in_one_line() -> None:
    for argv, words in ((["launch", "--foo"], "rlkit launch: no such option: --foo (see 'rlkit launch --help')"),
                        (["nosuch"], "rlkit: no such command 'nosuch' (see 'rlkit --help')"),
                        (["launch", "local", "--cpus", "x"], "rlkit launch local: invalid value for '--cpus'"),
                        (["submit", "--timeout", "inf", "--", "x"], "rlkit submit: invalid value for '--timeout'")):
        result = subprocess.run([sys.executable, "-m", "rlkit", *argv], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=120, env={**os.environ, "COLUMNS": "200"})
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [f"error: {result.stderr.split('error: ', 1)[-1].strip()}"]
        assert words in result.stderr
