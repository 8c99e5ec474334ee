"""Pickling environments with their state, for an exact resume.

gymnasium's and PettingZoo's ``EzPickle`` makes an environment pickle as its
constructor arguments: unpickled, it is a new environment at its start (a
tictactoe board empties, a MuJoCo body jumps back), and a resumed run would
silently diverge from an uninterrupted one. Here such objects pickle as
their attributes instead, like any other object; loading needs nothing
special (``pickle.loads``).

pygame's surfaces and fonts (the canvases, sprites and labels of mpe2's and
the butterfly family's worlds) cannot be pickled at all; here a surface
pickles as its pixels and a font as its file and size, so those environments
resume exactly too.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import zlib
from typing import Any

from gymnasium.utils.ezpickle import EzPickle


def _set_attributes(obj: Any, state: dict[str, Any]) -> None:
    obj.__dict__.update(state)


def _surface(pixels: bytes, size: tuple[int, int]) -> Any:
    import pygame

    return pygame.image.frombytes(zlib.decompress(pixels), size, "RGBA")


def _font(path: str, size: float) -> Any:
    import pygame.freetype

    pygame.freetype.init()
    # Labels only: where the file is not (another install), pygame's default face stands in.
    return pygame.freetype.Font(path if os.path.exists(path) else None, size)


def _pygame(obj: Any, name: str) -> bool:
    cls = type(obj)
    return cls.__name__ == name and cls.__module__.startswith("pygame")


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, EzPickle) and not isinstance(obj, type):
            # Created empty and memoised first, then filled: cycles back to the env pickle too.
            return copyreg.__newobj__, (type(obj),), obj.__dict__, None, None, _set_attributes
        if _pygame(obj, "Surface"):
            import pygame

            # Compressed: an unused 700x700 canvas is 2 MB of zeros per env copy.
            return _surface, (zlib.compress(pygame.image.tobytes(obj, "RGBA"), 1), obj.get_size())
        if _pygame(obj, "Font"):
            return _font, (obj.path, obj.size)
        return NotImplemented


def dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()
