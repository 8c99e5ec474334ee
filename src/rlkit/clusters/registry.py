"""The clusters rlkit knows by name: the address file joined with rlkit's records."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from rlkit import paths
from rlkit.clusters import address_file
from rlkit.clusters.address_file import AddressEntry
from rlkit.clusters.auth import TokenSource, tied_token, token_source
from rlkit.clusters.parallel import run_parallel
from rlkit.clusters.provider import provider_for
from rlkit.clusters.records import ClusterRecord, check_record_path, delete_record, list_records, load_record, save_record
from rlkit.errors import BadInputError, UnknownClusterError

MANUAL = "manual"
# How long a lookup waits for the providers to reopen their ways to dashboards.
RECONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Cluster:
    """One named cluster. ``entry`` is its line in the address file (None
    when the user removed the line but rlkit's record remains); ``record``
    is rlkit's record (None for entries written by hand: ``provider`` is
    then ``"manual"``)."""

    name: str
    entry: AddressEntry | None
    record: ClusterRecord | None
    # Why the provider's way to its dashboard (an SSH tunnel, say) could not be opened again.
    reconnect_error: str | None = None

    @property
    def provider(self) -> str:
        return self.record.provider if self.record else MANUAL

    @property
    def address(self) -> str:
        if self.entry:
            return self.entry.address
        assert self.record is not None
        return self.record.address

    @property
    def dashboard_url(self) -> str:
        # rlkit knows the dashboard of what it launched; a hand-written
        # address is resolved by rule (a GCS address implies port 8265).
        if self.record and (self.entry is None or self.entry.address == self.record.address):
            return self.record.dashboard_url
        assert self.entry is not None
        return self.entry.dashboard_url

    @property
    def ray_address(self) -> str | None:
        """What ``ray.init()`` and ``ray status`` connect to (``RAY_ADDRESS``):
        the GCS or a Ray Client address; None when only the dashboard is known."""
        if self.record and (self.entry is None or self.owns_entry):
            return self.record.gcs_address
        assert self.entry is not None
        parsed = self.entry.parsed
        if parsed.scheme == "gcs":
            return f"{parsed.host}:{parsed.port}"
        return self.entry.address if parsed.scheme == "ray" else None

    @property
    def owns_entry(self) -> bool:
        """Whether the address line is rlkit's to rewrite or remove."""
        return bool(self.record and self.entry and self.entry.address == self.record.address)

    @property
    def token(self) -> TokenSource:
        """What launched it gave it (rlkit's own file), or what the user
        tied to its line; never a token from the shell by default."""
        if self.record and (self.entry is None or self.owns_entry):
            return token_source(self.record.token_path)
        assert self.entry is not None
        return tied_token(self.entry.token)

    @property
    def auth_header(self) -> str | None:
        """The header its token travels in (None: Authorization)."""
        if self.record and (self.entry is None or self.owns_entry):
            return self.record.auth_header
        return None

    def describe_token(self) -> str:
        """Which token went, for a message about a refused one."""
        source = self.token.describe()
        if source != "no token":
            return f"token: {source}"
        if self.record and (self.entry is None or self.owns_entry):
            return "rlkit launched it without a token"
        return (f"no token is tied to it: write '# Token: env' (or '# Token: FILE') "
                f"after its '# Cluster:' line in {paths.address_file()}")

    def port_warning(self) -> str | None:
        return self.entry.parsed.port_warning() if self.entry else None


def list_clusters() -> list[Cluster]:
    """Every cluster: address-file entries in file order, then records whose
    line is gone from the file."""
    # Reconnected first: a tunnel reopened on another port rewrites its address line.
    listed, errors = _reconnected(list_records())
    entries = address_file.read_entries()
    records = {r.name: _adopt(r, entries) for r in listed}
    clusters = [Cluster(e.name, e, records.pop(e.name, None), errors.get(e.name)) for e in entries]
    clusters += [Cluster(r.name, None, r, errors.get(r.name)) for r in records.values()]
    return clusters


def _reconnected(records: list[ClusterRecord]) -> tuple[list[ClusterRecord], dict[str, str]]:
    """The records, each up one's way to its dashboard reopened by its
    provider where it was gone (all at once), and why, per name, one could
    not be."""
    up = [r for r in records if r.state == "up"]
    outcomes = run_parallel(lambda r: provider_for(r).reconnect(r), up, timeout=RECONNECT_TIMEOUT_S)
    reopened = {r.name: o.value for r, o in zip(up, outcomes) if o.value is not None}
    errors = {r.name: str(o.error or "no answer in time").removeprefix(f"{r.name}: ")
              for r, o in zip(up, outcomes) if o.value is None and (o.error or not o.finished)}
    return [reopened.get(r.name, r) for r in records], errors


def get_cluster(name: str) -> Cluster:
    return select_clusters([name])[0]


def select_clusters(names: Iterable[str] | None = None) -> list[Cluster]:
    """The clusters called ``names`` (all of them for None), in that order;
    unknown names raise ``UnknownClusterError`` naming them all."""
    clusters = list_clusters()
    if names is None:
        return clusters
    by_name = {c.name: c for c in clusters}
    wanted = list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in by_name]
    if unknown:
        known = ", ".join(by_name) or "none"
        listed = ", ".join(repr(n) for n in unknown)
        raise UnknownClusterError(
            f"no cluster named {listed} in {paths.address_file()}",
            f"known clusters: {known}; `rlkit status` lists them",
        )
    return [by_name[n] for n in wanted]


def claim_name(name: str, provider: str) -> ClusterRecord | None:
    """Check that ``provider`` may launch a cluster called ``name``; return
    the record of an earlier launch of it (to relaunch), if any. A
    hand-written entry, or another provider's cluster, keeps the name."""
    check_record_path(name)
    entries = address_file.read_entries()
    record = reload_record(name, entries)
    for entry in entries:
        if entry.name == name and (record is None or entry.address != record.address):
            raise BadInputError(
                f"{paths.address_file()}:{entry.line}: {name!r} is a cluster rlkit did not launch",
                "pick another --name",
            )
    if record and record.provider != provider:
        raise BadInputError(f"{name!r} is a {record.provider} cluster", "pick another --name")
    return record


def reload_record(name: str, entries: list[AddressEntry] | None = None) -> ClusterRecord | None:
    """rlkit's record of ``name`` as it is on disk now (a broken one with
    its address entry adopted)."""
    record = load_record(name)
    return _adopt(record, address_file.read_entries() if entries is None else entries) if record else None


def _adopt(record: ClusterRecord, entries: list[AddressEntry]) -> ClusterRecord:
    """A broken record has lost its address: the entry of its name, which
    rlkit wrote under ``# Cluster: NAME``, is taken to be its own again (so
    that teardown removes it and a relaunch rewrites it)."""
    if record.state != "broken":
        return record
    entry = next((e for e in entries if e.name == record.name), None)
    return replace(record, address=entry.address, dashboard_url=entry.dashboard_url) if entry else record


def register(record: ClusterRecord, replaces: str | None = None) -> None:
    """Save ``record`` and put its entry in the address file. ``replaces`` is
    the address rlkit registered for this name before (a relaunch): that
    line is rewritten in place, keeping its position in the file."""
    save_record(record)
    address_file.set_entry(record.name, record.address, replaces=replaces)


def unregister(cluster: Cluster, keep_entry: bool = False) -> None:
    """Forget a cluster rlkit launched: its address line (only if still the
    one rlkit wrote) and its record. With ``keep_entry`` both stay, so that
    ``rlkit launch`` can bring the same name back at the same place."""
    if keep_entry or cluster.record is None:
        return
    address_file.remove_entry(cluster.name, cluster.record.address)
    delete_record(cluster.name)
