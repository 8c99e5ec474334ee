#!/usr/bin/env python3
"""Throwaway SSH test hosts on this machine, made of Linux namespaces.

    python scripts/testhosts.py start 2            # two hosts, printed as JSON
    python scripts/testhosts.py status
    python scripts/testhosts.py stop               # every set; --state-dir D for one

Each host is a network namespace joined to a bridge in the root namespace by
a veth pair, with Debian's sshd running in its own PID and mount namespaces.
A host sees the machine's filesystem except for a private /tmp and /run and
a copy-on-write home directory (an overlay over the real one), so a Python
environment installed here is usable over SSH while Ray's per-node files
(/tmp/ray, ~/ray_bootstrap_config.yaml) stay per host, as on real machines.
Hosts have no default route: they reach the bridge subnet and nothing else.

Login is by key only, with a client key pair made for the hosts. Everything
made is recorded in the state file, and `stop` removes all of it, killing
only the sshd processes it started (each is PID 1 of its host, so the
kernel ends every process on that host with it).

Root is needed (network namespaces). Missing tools (sshd, ip, rsync) are
installed with apt-get. Exit codes: 0 ok, 1 failed, 2 bad usage,
77 namespaces cannot be created on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

STATE_ROOT = Path("/var/lib/rlkit-testhosts")
STATE_FILE = "testhosts.json"
AUTO_POOL = ipaddress.ip_network("10.250.0.0/16")
EXIT_NO_NAMESPACES = 77
SSHD = "/usr/sbin/sshd"
# What each tool is installed from; rsync is not used here but Ray's cluster
# launcher needs it on every node it syncs files to.
APT_PACKAGES = {SSHD: "openssh-server", "ip": "iproute2", "rsync": "rsync", "unshare": "util-linux"}
# Directories a host sees its own empty copy of.
PRIVATE_DIRS = ("/tmp", "/run")


class Failure(Exception):
    """A one-line reason the command failed."""

    exit_code = 1


class NoNamespaces(Failure):
    exit_code = EXIT_NO_NAMESPACES


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise Failure(f"`{' '.join(cmd)}` failed: {detail[-1] if detail else proc.returncode}")
    return proc


# ---------------------------------------------------------------- preflight


def ensure_tools() -> None:
    missing = sorted({pkg for tool, pkg in APT_PACKAGES.items() if not shutil.which(tool)})
    if not missing:
        return
    if os.geteuid() != 0:
        raise Failure(f"missing packages {', '.join(missing)}; install them as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", *missing]
    print(f"installing {' '.join(missing)} with apt-get", file=sys.stderr)
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        # A fresh machine has no package lists yet.
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        proc = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise Failure(f"apt-get install {' '.join(missing)} failed: {proc.stderr.strip()[-300:]}")


def check_namespaces(probe: str) -> None:
    """Make and remove one network namespace, to fail early and clearly."""
    if os.geteuid() != 0:
        raise NoNamespaces("test hosts need root (network namespaces); run with sudo")
    proc = run("ip", "netns", "add", probe, check=False)
    if proc.returncode != 0:
        raise NoNamespaces(
            f"cannot create network namespaces here ({proc.stderr.strip()}); "
            "this needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN"
        )
    run("ip", "netns", "del", probe, check=False)
    proc = run("unshare", "--pid", "--mount", "--fork", "--mount-proc", "true", check=False)
    if proc.returncode != 0:
        raise NoNamespaces(f"cannot create PID and mount namespaces here ({proc.stderr.strip()})")


# ---------------------------------------------------------------- addresses


def used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for entry in json.loads(run("ip", "-j", "-4", "addr").stdout or "[]"):
        for info in entry.get("addr_info", []):
            nets.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in json.loads(run("ip", "-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
    return nets


def pick_subnet(requested: str) -> ipaddress.IPv4Network:
    used = used_networks()
    if requested != "auto":
        subnet = ipaddress.ip_network(requested, strict=True)
        clash = [str(n) for n in used if n.overlaps(subnet)]
        if clash:
            raise Failure(f"subnet {subnet} overlaps {', '.join(clash)} already on this machine; pick another --subnet")
        return subnet
    for candidate in AUTO_POOL.subnets(new_prefix=24):
        if not any(n.overlaps(candidate) for n in used):
            return candidate
    raise Failure(f"no free /24 left in {AUTO_POOL}; stop other test hosts or pass --subnet")


# ---------------------------------------------------------------- processes


def proc_start_time(pid: int) -> int | None:
    """The kernel's start time of pid (clock ticks), to tell it from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def pids_in_namespace(pidns: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "pid") == pidns:
                    found.append(int(entry.name))
    return found


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def tcp_open(ip: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((ip, port), timeout=0.5):
        return True
    return False


# ---------------------------------------------------------------- files


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def sshd_config(host: dict, state: dict) -> str:
    path = f"{state['path_prepend']}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return "\n".join(
        [
            f"ListenAddress {host['ip']}",
            "Port 22",
            f"HostKey {host['dir']}/ssh_host_ed25519_key",
            f"AuthorizedKeysFile {state['state_dir']}/authorized_keys",
            f"AllowUsers {state['user']}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "PidFile none",
            # Plain `ssh host cmd` sessions; login shells get it from ~/.profile.
            f"SetEnv PATH={path}",
            # Ray's launcher multiplexes many sessions over one connection.
            "MaxSessions 64",
            "MaxStartups 64:30:128",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def home_dotfiles(upper: Path, path_prepend: str) -> None:
    """The host's own ~/.bashrc and ~/.profile, shadowing the real ones.

    Debian's /etc/profile resets PATH for login shells, and Ray's launcher
    runs every command in `bash --login -i`, so PATH is set here, last.
    """
    line = f'case ":$PATH:" in *":{path_prepend}:"*) ;; *) export PATH="{path_prepend}:$PATH" ;; esac\n'
    write_private(upper / ".bashrc", "# written by rlkit testhosts\n" + line, 0o644)
    write_private(upper / ".profile", '[ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"\n', 0o644)


def ssh_client_files(state: dict) -> None:
    """known_hosts and an ssh_config, so `ssh -F STATE/ssh_config NAME` just works."""
    known, config = [], []
    for host in state["hosts"]:
        pub = Path(host["dir"], "ssh_host_ed25519_key.pub").read_text().split()
        known.append(f"{host['ip']} {pub[0]} {pub[1]}")
        config += [
            f"Host {host['name']} {host['ip']}",
            f"  HostName {host['ip']}",
            f"  User {state['user']}",
            f"  IdentityFile {state['key']}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {state['state_dir']}/known_hosts",
            "  StrictHostKeyChecking yes",
            "  BatchMode yes",
            "",
        ]
    write_private(Path(state["state_dir"], "known_hosts"), "\n".join(known) + "\n", 0o644)
    write_private(Path(state["state_dir"], "ssh_config"), "\n".join(config), 0o644)


def save(state: dict) -> None:
    path = Path(state["state_dir"], STATE_FILE)
    tmp = path.with_suffix(".tmp")
    write_private(tmp, json.dumps(state, indent=2) + "\n", 0o644)
    tmp.replace(path)


# ---------------------------------------------------------------- start / stop


def start_host(host: dict, state: dict) -> None:
    hdir = Path(host["dir"])
    (hdir / "home-upper").mkdir(parents=True)
    (hdir / "home-work").mkdir()
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host["name"], "-f", str(hdir / "ssh_host_ed25519_key"))
    write_private(hdir / "sshd_config", sshd_config(host, state), 0o644)
    home_dotfiles(hdir / "home-upper", state["path_prepend"])

    run("ip", "netns", "add", host["netns"])
    run("ip", "link", "add", host["veth"], "type", "veth", "peer", "name", "eth0", "netns", host["netns"])
    run("ip", "link", "set", host["veth"], "master", state["bridge"], "up")
    ns = ("ip", "-n", host["netns"])
    run(*ns, "link", "set", "lo", "up")
    run(*ns, "addr", "add", f"{host['ip']}/{state['prefixlen']}", "dev", "eth0")
    run(*ns, "link", "set", "eth0", "up")

    home = state["home"]
    mounts = " && ".join(f"mount -t tmpfs -o mode={'1777' if d == '/tmp' else '0755'} tmpfs {d}" for d in PRIVATE_DIRS)
    # A Python environment under a private dir (a checkout in /tmp, say) would
    # vanish behind the tmpfs: park it on a bind mount and put it back.
    env_root = Path(state["path_prepend"]).parent
    if any(env_root.is_relative_to(d) for d in PRIVATE_DIRS):
        (hdir / "env").mkdir()
        mounts = (f"mount --bind {env_root} {hdir}/env && {mounts} && "
                  f"mkdir -p {env_root} && mount --bind {hdir}/env {env_root}")
    script = (
        f"set -e; {mounts} && mkdir -m 0755 /run/sshd && "
        f"mount -t overlay overlay -o lowerdir={home},upperdir={hdir}/home-upper,workdir={hdir}/home-work {home} && "
        f"exec {SSHD} -D -e -f {hdir}/sshd_config"
    )
    with open(hdir / "sshd.log", "ab") as log:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                host["netns"],
                "unshare",
                "--pid",
                "--mount",
                # Private propagation keeps the host's mounts (the parked env
                # above) out of the machine's namespace, where stop deletes dirs.
                "--propagation",
                "private",
                "--fork",
                "--mount-proc",
                "--kill-child=SIGKILL",
                "sh",
                "-c",
                script,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    host["unshare_pid"], host["unshare_start_time"] = proc.pid, proc_start_time(proc.pid)
    save(state)
    wait_for(lambda: children_of(proc.pid) or proc.poll() is not None, 10, f"{host['name']} to start")
    if proc.poll() is not None:
        raise Failure(f"sshd on {host['name']} exited: {(hdir / 'sshd.log').read_text().strip()[-300:]}")
    host["sshd_pid"] = children_of(proc.pid)[0]
    host["sshd_start_time"] = proc_start_time(host["sshd_pid"])
    host["pidns"] = os.readlink(f"/proc/{host['sshd_pid']}/ns/pid")
    save(state)
    wait_for(lambda: tcp_open(host["ip"], 22) or proc.poll() is not None, 15, f"sshd on {host['ip']}:22")
    if proc.poll() is not None:
        raise Failure(f"sshd on {host['name']} exited: {(hdir / 'sshd.log').read_text().strip()[-300:]}")


def check_login(host: dict, state: dict) -> None:
    proc = run("ssh", "-F", f"{state['state_dir']}/ssh_config", host["name"], "true", check=False)
    if proc.returncode != 0:
        raise Failure(f"ssh login to {host['name']} ({host['ip']}) failed: {proc.stderr.strip()[-300:]}")


@contextlib.contextmanager
def state_root_locked():
    """Hold the lock on STATE_ROOT (the directory itself, so that no lock
    file is left behind); STATE_ROOT is removed on the way out when empty.

    One start or stop at a time: concurrent starts pick different subnets
    and names. A waiter that finds the directory it locked removed starts over.
    """
    while True:
        STATE_ROOT.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(STATE_ROOT, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(STATE_ROOT).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            STATE_ROOT.rmdir()
        os.close(fd)


def start(args: argparse.Namespace) -> dict:
    ensure_tools()
    with state_root_locked():
        subnet = pick_subnet(args.subnet)
        prefix = args.prefix or f"rlk{subnet.network_address.packed[2]}"
        if len(prefix) > 8 or not prefix.replace("-", "").isalnum():
            raise Failure(f"--prefix {prefix!r} must be at most 8 letters, digits or '-'")
        check_namespaces(f"{prefix}probe")
        state_dir = Path(args.state_dir or STATE_ROOT / prefix).resolve()
        bad_parent = next((d for d in PRIVATE_DIRS if state_dir.is_relative_to(d)), None)
        if bad_parent:
            raise Failure(f"--state-dir {state_dir} is under {bad_parent}, which hosts do not share; pick another")
        if state_dir.exists() and any(state_dir.iterdir()):
            raise Failure(f"state dir {state_dir} is not empty; stop those hosts first or pick another --state-dir")
        if Path(f"/var/run/netns/{prefix}h1").exists():
            raise Failure(f"test hosts with prefix {prefix!r} already exist; stop them or pass another --prefix")
        user = pwd.getpwuid(os.geteuid())
        hosts_ips = list(subnet.hosts())
        if len(hosts_ips) < 10 + args.count:
            raise Failure(f"subnet {subnet} is too small for {args.count} hosts (they start at .11)")
        state = {
            "version": 1,
            "state_dir": str(state_dir),
            "prefix": prefix,
            "subnet": str(subnet),
            "prefixlen": subnet.prefixlen,
            "bridge": f"{prefix}br",
            "bridge_ip": str(hosts_ips[0]),
            "user": user.pw_name,
            "home": user.pw_dir,
            "key": str(state_dir / "id_ed25519"),
            "ssh_config": str(state_dir / "ssh_config"),
            "path_prepend": args.path_prepend,
            "hosts": [],
        }
        state_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        save(state)
        try:
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"rlkit-testhosts-{prefix}", "-f", state["key"])
            shutil.copyfile(state["key"] + ".pub", state_dir / "authorized_keys")
            run("ip", "link", "add", state["bridge"], "type", "bridge")
            run("ip", "addr", "add", f"{state['bridge_ip']}/{subnet.prefixlen}", "dev", state["bridge"])
            run("ip", "link", "set", state["bridge"], "up")
            for i in range(1, args.count + 1):
                name = f"{prefix}h{i}"
                host = {
                    "name": name,
                    "ip": str(hosts_ips[9 + i]),
                    "netns": name,
                    "veth": f"{name}v",
                    "dir": str(state_dir / "hosts" / name),
                }
                state["hosts"].append(host)
                save(state)
                start_host(host, state)
            ssh_client_files(state)
            save(state)
            for host in state["hosts"]:
                check_login(host, state)
        except BaseException:
            stop_state(state)
            raise
    return state


def kill_host_processes(host: dict) -> None:
    """Kill the host's sshd, or the unshare above it if sshd was never seen."""
    for key in ("sshd", "unshare"):
        pid = host.get(f"{key}_pid")
        if pid and proc_start_time(pid) == host.get(f"{key}_start_time"):
            # sshd is PID 1 of the host's PID namespace, so killing it ends every
            # process there; unshare was told to take its child down with it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
    if host.get("pidns"):
        wait_for(lambda: not pids_in_namespace(host["pidns"]), 15, f"the processes of {host['name']} to exit")


def stop_state(state: dict) -> list[str]:
    """Remove everything the state records; return what could not be removed."""
    problems = []
    for host in state["hosts"]:
        try:
            kill_host_processes(host)
        except Failure as err:
            problems.append(str(err))
        # Deleting the root end of a veth pair deletes both ends.
        for cmd in (("ip", "link", "del", host["veth"]), ("ip", "netns", "del", host["netns"])):
            proc = run(*cmd, check=False)
            if proc.returncode != 0 and "Cannot find" not in proc.stderr and "No such" not in proc.stderr:
                problems.append(f"`{' '.join(cmd)}`: {proc.stderr.strip()}")
    proc = run("ip", "link", "del", state["bridge"], check=False)
    if proc.returncode != 0 and "Cannot find" not in proc.stderr:
        problems.append(f"`ip link del {state['bridge']}`: {proc.stderr.strip()}")
    if not problems:
        shutil.rmtree(state["state_dir"], ignore_errors=True)
    return problems


def load(state_dir: Path) -> dict:
    path = state_dir / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise Failure(f"no test hosts recorded at {path}") from None


def find_states(args: argparse.Namespace) -> list[Path]:
    if args.state_dir:
        return [Path(args.state_dir).resolve()]
    if args.prefix:
        return [STATE_ROOT / args.prefix]
    return sorted(p.parent for p in STATE_ROOT.glob(f"*/{STATE_FILE}"))


def host_status(host: dict) -> dict:
    alive = bool(host.get("sshd_pid")) and proc_start_time(host["sshd_pid"]) == host.get("sshd_start_time")
    return {
        "name": host["name"],
        "ip": host["ip"],
        "netns": host["netns"],
        "sshd_pid": host.get("sshd_pid"),
        "alive": alive,
        "ssh_port_open": alive and tcp_open(host["ip"], 22),
        "processes": len(pids_in_namespace(host["pidns"])) if alive else 0,
    }


def public_view(state: dict) -> dict:
    keep = ("state_dir", "prefix", "subnet", "bridge", "bridge_ip", "user", "key", "ssh_config")
    return {
        **{k: state[k] for k in keep},
        "hosts": [{k: h.get(k) for k in ("name", "ip", "netns", "sshd_pid")} for h in state["hosts"]],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  testhosts.py start 2\n  ssh -F STATE_DIR/ssh_config rlk0h1 ray --version\n  testhosts.py stop",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="create N hosts and print their state as JSON")
    p_start.add_argument("count", type=int, metavar="N")
    p_start.add_argument("--prefix", help="name prefix for namespaces and links (default: rlk<X> from the subnet)")
    p_start.add_argument(
        "--subnet", default="auto", help=f"IPv4 subnet for the hosts' bridge (default: a free /24 in {AUTO_POOL})"
    )
    p_start.add_argument("--state-dir", help=f"where state, keys and configs go (default: {STATE_ROOT}/PREFIX)")
    p_start.add_argument(
        "--path-prepend",
        default=str(Path(sys.executable).parent),
        help="directory put first on PATH in SSH sessions (default: this Python's bin)",
    )
    for name, text in (
        ("stop", "stop hosts and remove everything they made (every set, without --state-dir/--prefix)"),
        ("status", "show hosts as JSON"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--state-dir")
        p.add_argument("--prefix")
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            if not 1 <= args.count <= 200:
                parser.error("N must be between 1 and 200")
            print(json.dumps(public_view(start(args)), indent=2))
            return 0
        states = find_states(args)
        if args.command == "status":
            out = []
            for sd in states:
                state = load(sd)
                out.append({**public_view(state), "hosts": [host_status(h) for h in state["hosts"]]})
            print(json.dumps(out, indent=2))
            return 0
        if not states:
            print("no test hosts to stop", file=sys.stderr)
            return 0
        with state_root_locked():
            problems = [p for sd in states for p in stop_state(load(sd))]
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1 if problems else 0
    except Failure as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
