"""Pickling environments with their state, for an exact resume.

gymnasium's and PettingZoo's ``EzPickle`` makes an environment pickle as its
constructor arguments: unpickled, it is a new environment at its start (a
tictactoe board empties, a MuJoCo body jumps back), and a resumed run would
silently diverge from an uninterrupted one. Here such objects pickle as
their attributes instead, like any other object; loading needs nothing
special (``pickle.loads``).
"""

from __future__ import annotations

import copyreg
import io
import pickle
from typing import Any

from gymnasium.utils.ezpickle import EzPickle


def _set_attributes(obj: Any, state: dict[str, Any]) -> None:
    obj.__dict__.update(state)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, EzPickle) and not isinstance(obj, type):
            # Created empty and memoised first, then filled: cycles back to the env pickle too.
            return copyreg.__newobj__, (type(obj),), obj.__dict__, None, None, _set_attributes
        return NotImplemented


def dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()
