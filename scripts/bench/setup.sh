#!/usr/bin/env bash
# Install what the training benchmark needs. Idempotent: rerunning is quick.
#   .venv/                 rlkit itself (scripts/setup.sh)
#   scripts/bench/.venv/   the peers: Stable-Baselines3 and RLlib. A venv of
#                          their own because ray[rllib]==2.60.0 pins
#                          gymnasium==1.2.2, which would downgrade rlkit's
#                          gymnasium 1.4.
# The multi-agent benchmark (marl_bench.py) needs the PettingZoo families in
# both: mpe2 (simple_spread, simple_adversary) and the classic games
# (connect_four, rlkit only). mpe2 pulls pygame-ce; plain pygame installs the
# same module and breaks it, so it is never named here.
# torch is installed first and pinned, as scripts/setup.sh does (set
# RLKIT_TORCH to choose another build, e.g. a CUDA one).
set -euo pipefail
cd "$(dirname "$0")/../.."

scripts/setup.sh
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[mpe,classic]"

python=${PYTHON:-python3}
peers=scripts/bench/.venv
[ -x "$peers/bin/python" ] || "$python" -m venv "$peers"
pip=("$peers/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" "${RLKIT_TORCH:-torch==2.13.0}"
"${pip[@]}" "stable-baselines3==2.9.2" "ray[rllib]==2.60.0" "pettingzoo>=1.27" "mpe2>=1.1"
