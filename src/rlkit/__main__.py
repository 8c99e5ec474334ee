"""``python -m rlkit``: the command line, where rlkit travels with a job as
a module and its console script does not exist."""

from rlkit.cli import entry

if __name__ == "__main__":
    entry()
