"""The registry: ~/.ray_address as users write it, and rlkit's own records."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlkit import paths
from rlkit.clusters import auth, registry
from rlkit.clusters.address_file import parse_address, parse_entries, read_entries, remove_entry, set_entry
from rlkit.clusters.records import ClusterRecord, ProcessRef, load_record, save_record
from rlkit.errors import AddressFileError, BadInputError, UnknownClusterError
from tests.cli_helpers import one_error_line, run_rlkit
from tests.conftest import CONFIGS

DESIGN_EXAMPLE = """\
# Cluster: lab-a
10.21.16.30:6379
# Cluster: lab-b
http://10.21.70.164:8265
"""


def entries_of(text: str) -> list[tuple[str, str, str]]:
    return [(e.name, e.address, e.dashboard_url) for e in parse_entries(text, "f")]


def test_design_example_resolves_to_dashboards() -> None:
    assert entries_of(DESIGN_EXAMPLE) == [
        ("lab-a", "10.21.16.30:6379", "http://10.21.16.30:8265"),
        ("lab-b", "http://10.21.70.164:8265", "http://10.21.70.164:8265"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # comments, blank lines and spacing as people write them
        ("# my clusters\n\n#Cluster:dev\n  127.0.0.1:6379  \n\n# the end\n",
         [("dev", "127.0.0.1:6379", "http://127.0.0.1:8265")]),
        ("# CLUSTER :  Big Lab \nhttps://ray.lab.example:443/ray/\n",
         [("Big Lab", "https://ray.lab.example:443/ray/", "https://ray.lab.example:443/ray")]),
        # no '# Cluster:' line: the address is the name
        ("10.0.0.5:6379\nray://10.0.0.6:10001\n",
         [("10.0.0.5:6379", "10.0.0.5:6379", "http://10.0.0.5:8265"),
          ("ray://10.0.0.6:10001", "ray://10.0.0.6:10001", "http://10.0.0.6:8265")]),
        # a commented-out entry: its '# Cluster:' line names nothing
        ("# Cluster: old\n# 10.0.0.1:6379\n# Cluster: new\n10.0.0.2:6379\n",
         [("new", "10.0.0.2:6379", "http://10.0.0.2:8265")]),
        # a dashboard written without scheme; IPv6; https without port
        ("host.lab:8265\n[::1]:6379\nhttps://ray.example\n",
         [("host.lab:8265", "host.lab:8265", "http://host.lab:8265"),
          ("[::1]:6379", "[::1]:6379", "http://[::1]:8265"),
          ("https://ray.example", "https://ray.example", "https://ray.example:443")]),
        ("", []),
        ("# only comments\n\n", []),
        ("# Cluster: a\r\n127.0.0.1:6379\r\n", [("a", "127.0.0.1:6379", "http://127.0.0.1:8265")]),
    ],
)
def test_hand_written_files(text: str, expected: list[tuple[str, str, str]]) -> None:
    assert entries_of(text) == expected


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("# Cluster: a\n10.0.0.1:6379 # lab\n", 2, "more than one word"),
        ("\n\nheadnode\n", 3, "has no port"),
        ("ftp://10.0.0.1:21\n", 1, "unsupported scheme"),
        ("10.0.0.1:99999\n", 1, "not a port number"),
        ("10.0.0.1:\n", 1, "not a port number"),
        ("# Cluster:\n10.0.0.1:6379\n", 1, "without a name"),
        ("# Cluster: a\n10.0.0.1:6379\n# Cluster: a\n10.0.0.2:6379\n", 4, "already used on line 2"),
        ("10.0.0.1:6379/path\n", 1, "has a path"),
        ("http://a b:8265\n", 1, "more than one word"),
        ("<<<>>>\n", 1, "is not an address"),
    ],
)
def test_malformed_line_names_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(AddressFileError) as err:
        parse_entries(text, "/some/ray_address")
    assert str(err.value).startswith(f"/some/ray_address:{line}: ")
    assert words in str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("address", ["http://10.0.0.1:6379", "https://h:10001"])
def test_dashboard_url_on_a_gcs_or_client_port_is_flagged(address: str) -> None:
    warning = parse_address(address).port_warning()
    assert warning is not None and "8265" in warning


def test_usual_addresses_are_not_flagged() -> None:
    for address in ("10.0.0.1:6379", "http://10.0.0.1:8265", "ray://10.0.0.1:10001"):
        assert parse_address(address).port_warning() is None


def test_read_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_entries(tmp_path / "nope") == []


def test_env_variables_move_both_paths(tmp_path: Path) -> None:
    assert paths.address_file() == tmp_path / "ray_address"
    assert paths.rlkit_home() == tmp_path / "rlkit-home"
    assert paths.address_file() != Path.home() / ".ray_address"


# --------------------------------------------------------------- writing


HAND_WRITTEN = "# my lab\n\n# Cluster: lab-a\n10.21.16.30:6379\n10.0.0.9:6379\n# trailing comment"


def test_set_entry_appends_and_keeps_hand_written_lines(tmp_path: Path) -> None:
    path = tmp_path / "ray_address"
    path.write_text(HAND_WRITTEN)
    set_entry("dev", "http://127.0.0.1:8265", path=path)
    text = path.read_text()
    assert text == HAND_WRITTEN + "\n# Cluster: dev\nhttp://127.0.0.1:8265\n"
    assert [e.name for e in read_entries(path)] == ["lab-a", "10.0.0.9:6379", "dev"]


def test_set_entry_is_idempotent_and_never_overwrites_a_hand_written_entry(tmp_path: Path) -> None:
    path = tmp_path / "ray_address"
    path.write_text(HAND_WRITTEN)
    with pytest.raises(AddressFileError, match=r"ray_address:4: cluster 'lab-a' is already registered"):
        set_entry("lab-a", "http://127.0.0.1:8265", path=path)
    set_entry("dev", "http://127.0.0.1:8265", path=path)
    before = path.read_text()
    set_entry("dev", "http://127.0.0.1:8265", path=path)
    assert path.read_text() == before


def test_relaunch_rewrites_its_own_line_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ray_address"
    set_entry("first", "http://127.0.0.1:1000", path=path)
    set_entry("second", "http://127.0.0.1:2000", path=path)
    set_entry("first", "http://127.0.0.1:3000", replaces="http://127.0.0.1:1000", path=path)
    assert path.read_text() == "# Cluster: first\nhttp://127.0.0.1:3000\n# Cluster: second\nhttp://127.0.0.1:2000\n"


def test_remove_entry_removes_only_its_two_lines(tmp_path: Path) -> None:
    path = tmp_path / "ray_address"
    path.write_text(HAND_WRITTEN + "\n")
    set_entry("dev", "http://127.0.0.1:8265", path=path)
    assert not remove_entry("lab-a", "http://elsewhere:8265", path=path)  # not the address rlkit wrote
    assert remove_entry("dev", "http://127.0.0.1:8265", path=path)
    assert path.read_text() == HAND_WRITTEN + "\n"


def test_written_file_works_with_rays_awk_recipe(tmp_path: Path) -> None:
    path = tmp_path / "ray_address"
    set_entry("a", "http://127.0.0.1:8265", path=path)
    set_entry("b", "http://127.0.0.1:9265", path=path)
    first = subprocess.run(f"awk '!/^#/' {path} | head -n 1", shell=True, capture_output=True, text=True, check=True)
    assert first.stdout == "http://127.0.0.1:8265\n"


def test_a_symlinked_address_file_stays_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "ray_address"
    target.parent.mkdir()
    target.write_text(DESIGN_EXAMPLE)
    link = tmp_path / "ray_address"
    link.symlink_to(target)
    set_entry("dev", "http://127.0.0.1:8265", path=link)
    assert link.is_symlink()
    assert target.read_text().endswith("# Cluster: dev\nhttp://127.0.0.1:8265\n")


def test_writes_refuse_a_malformed_file_and_leave_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "ray_address"
    path.write_text("# Cluster: x\nnot an address\n")
    with pytest.raises(AddressFileError, match=r":2: "):
        set_entry("dev", "http://127.0.0.1:8265", path=path)
    assert path.read_text() == "# Cluster: x\nnot an address\n"


_WRITER = """
import sys
from pathlib import Path
from rlkit.clusters.address_file import set_entry
i = int(sys.argv[1])
for j in range(5):
    set_entry(f"c{i}-{j}", f"http://127.0.0.1:{20000 + 10 * i + j}", path=Path(sys.argv[2]))
"""


def test_twenty_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ray_address"
    path.write_text(HAND_WRITTEN + "\n")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(i), str(path)]) for i in range(20)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 20
    entries = read_entries(path)
    expected = {f"c{i}-{j}": f"http://127.0.0.1:{20000 + 10 * i + j}" for i in range(20) for j in range(5)}
    assert {e.name: e.address for e in entries if e.name.startswith("c")} == expected
    assert path.read_text().startswith(HAND_WRITTEN + "\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ray_address", "ray_address.lock"]


# --------------------------------------------------------------- properties

_line = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"))


_names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,20}\Z")
_hosts = st.one_of(
    st.from_regex(r"\A[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}\Z"),
    st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
)
_addresses = st.builds(
    lambda scheme, host, port: f"{scheme}{host}:{port}",
    st.sampled_from(["", "http://", "https://", "ray://"]), _hosts, st.integers(1, 65535),
)
# Arbitrary text, and the lines a real file is made of.
_file_lines = st.one_of(_line, _addresses, _names.map(lambda n: f"# Cluster: {n}"), st.just(""))


@given(st.lists(_file_lines, max_size=12))
def test_any_file_parses_or_fails_with_file_and_line(lines: list[str]) -> None:
    text = "\n".join(lines)
    try:
        entries = parse_entries(text, "F")
    except AddressFileError as err:
        assert re.match(r"^F:\d+: ", str(err))
        line = int(str(err).split(":")[1])
        assert 1 <= line <= len(lines)
        return
    for entry in entries:
        assert lines[entry.line - 1].strip() == entry.address
        assert entry.dashboard_url.startswith(("http://", "https://"))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(existing=st.lists(_file_lines, max_size=6), new=st.dictionaries(_names, _addresses, min_size=1, max_size=4))
def test_writes_round_trip_and_keep_every_other_line(tmp_path: Path, existing: list[str], new: dict[str, str]) -> None:
    path = tmp_path / "prop_address"
    text = "\n".join(existing)
    try:
        old = parse_entries(text, "F")
    except AddressFileError:
        return
    if any(e.name in new for e in old):
        return
    path.write_text(text)
    for name, address in new.items():
        set_entry(name, address, path=path)
    assert path.read_text().startswith(text)
    got = {e.name: e.address for e in read_entries(path)}
    assert all(got[name] == address for name, address in new.items())
    for name, address in new.items():
        assert remove_entry(name, address, path=path)
    assert path.read_text().rstrip("\n") == text.rstrip("\n")
    path.unlink()


# --------------------------------------------------------------- records, tokens


def test_record_round_trip_is_private(tmp_path: Path) -> None:
    record = ClusterRecord(
        name="dev", provider="local", address="http://127.0.0.1:1234", dashboard_url="http://127.0.0.1:1234",
        ports={"gcs": 1}, pids=[ProcessRef(10, 20)], temp_dir="/tmp/rlkit-dev-x", token_path="/t",
        ssh={"user": "u"},
    )
    path = save_record(record)
    assert load_record("dev") == record
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_token_files_are_0600_and_distinct() -> None:
    a, b = auth.create_token_file("a"), auth.create_token_file("b")
    assert stat.S_IMODE(a.stat().st_mode) == 0o600
    assert stat.S_IMODE(a.parent.stat().st_mode) == 0o700
    assert a.read_text() != b.read_text() and len(a.read_text()) == 64


def test_unknown_cluster_names_every_unknown_and_the_known(tmp_path: Path) -> None:
    paths.address_file().write_text(DESIGN_EXAMPLE)
    with pytest.raises(UnknownClusterError) as err:
        registry.select_clusters(["lab-a", "nope", "gone"])
    message = str(err.value)
    assert "'nope', 'gone'" in message and "lab-a, lab-b" in message
    assert err.value.exit_code == 2


def test_hand_written_entries_are_manual_and_rlkits_own_carry_the_record() -> None:
    paths.address_file().write_text(DESIGN_EXAMPLE)
    record = ClusterRecord("dev", "local", "http://127.0.0.1:5555", "http://127.0.0.1:5555", token_path="/tok")
    registry.register(record)
    clusters = {c.name: c for c in registry.list_clusters()}
    assert clusters["lab-a"].provider == "manual" and not clusters["lab-a"].owns_entry
    assert clusters["dev"].provider == "local" and clusters["dev"].owns_entry
    assert clusters["dev"].token.path == Path("/tok")


def test_invalid_launch_names_are_refused() -> None:
    from rlkit.clusters.records import check_name

    for bad in ("", "-x", "a/b", "a b", "x" * 41):
        with pytest.raises(BadInputError):
            check_name(bad)


def test_only_a_tied_hand_written_entry_takes_the_environments_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/nonexistent")
    paths.address_file().write_text(
        "# Cluster: untied\nhttp://127.0.0.1:1\n# Cluster: tied\n# Token: env\nhttp://127.0.0.1:2\n"
        "# Cluster: own-file\n# token: /srv/lab.token\nhttp://127.0.0.1:3\n"
        "# Cluster: old\n# Token: env\n# Cluster: after-a-commented-out-entry\nhttp://127.0.0.1:4\n"
    )
    tokens = {c.name: c.token for c in registry.list_clusters()}
    assert tokens["untied"].read() is None and tokens["after-a-commented-out-entry"].read() is None
    assert tokens["tied"].read() == "from-env"
    assert tokens["own-file"].path == Path("/srv/lab.token")
    # A cluster rlkit launched has its own token, whatever its line says.
    registry.register(ClusterRecord("dev", "local", "http://127.0.0.1:5", "http://127.0.0.1:5", token_path="/tok"))
    paths.address_file().write_text(paths.address_file().read_text().replace("# Cluster: dev\n", "# Cluster: dev\n# Token: env\n"))
    assert registry.get_cluster("dev").token.path == Path("/tok")
    monkeypatch.delenv("RAY_AUTH_TOKEN")  # then as Ray's CLI: the file RAY_AUTH_TOKEN_PATH names
    with pytest.raises(BadInputError, match="token file /nonexistent is missing"):
        registry.get_cluster("tied").token.read()


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("# Token: env\nhttp://127.0.0.1:1\n", 1, "'# Token:' line outside an entry"),
        ("# Cluster: a\n# Token: lab.token\nhttp://127.0.0.1:1\n", 2, "neither 'env' nor an absolute token file path"),
    ],
)
def test_a_misplaced_or_relative_token_line_names_file_and_line(text: str, line: int, words: str) -> None:
    with pytest.raises(AddressFileError, match=f"<text>:{line}: .*{words}"):
        parse_entries(text)


def test_removing_an_entry_removes_its_token_line(tmp_path: Path) -> None:
    path = tmp_path / "ray_address"
    path.write_text("# Cluster: a\n# Token: env\nhttp://127.0.0.1:1\n# Cluster: b\nhttp://127.0.0.1:2\n")
    assert remove_entry("a", "http://127.0.0.1:1", path)
    assert path.read_text() == "# Cluster: b\nhttp://127.0.0.1:2\n"


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("not an address", "--address: 'not an address' is not an address; use host:port"),
        ("http://127.0.0.1:8265", "is a dashboard address; Ray connects to the GCS"),
        ("", "--address: empty address"),
        ("127.0.0.1:99999", "is not a port number"),
    ],
)
def test_train_refuses_an_address_ray_cannot_connect_to(address: str, words: str) -> None:
    result = run_rlkit("train", str(CONFIGS / "ppo_cartpole.yaml"), "--address", address)
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in one_error_line(result)
