#!/usr/bin/env bash
# Create .venv with rlkit installed (editable). Idempotent: rerunning is quick.
#   scripts/setup.sh          the package, to train and launch
#   scripts/setup.sh test     plus the test tools and the test hosts' sshd
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

# torch is installed first and pinned: a bare "torch" requirement makes pip
# choose a multi-GB CUDA build, while this version's CPU wheel is cached on
# the machines we run on. Set RLKIT_TORCH to choose another (e.g. a CUDA one).
"${pip[@]}" "${RLKIT_TORCH:-torch==2.13.0}"

if [ "${1:-}" = "test" ]; then
    "${pip[@]}" -e ".[test]"
    # The on-prem tests run Debian's sshd in network namespaces (as root), and
    # ray up needs rsync for its file mounts.
    missing() { ! command -v "$1" >/dev/null && [ ! -x "/usr/sbin/$1" ]; }
    if [ "$(id -u)" = 0 ] && { missing sshd || missing rsync || missing ip; }; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq openssh-server rsync iproute2 >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq openssh-server rsync iproute2 >/dev/null; } ||
            echo "setup.sh: could not install openssh-server, rsync, iproute2: the on-prem tests will fail" >&2
    fi
else
    "${pip[@]}" -e .
fi
