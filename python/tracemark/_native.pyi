"""Type stubs of the compiled module (PyO3)."""

import os
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union, overload

import numpy as np
import numpy.typing as npt

_Array = npt.NDArray[Union[np.uint8, np.uint16]]
_PathLike = Union[str, "os.PathLike[str]"]

class TracemarkError(Exception):
    """A file, array, key or ledger tracemark refuses (the CLI's one-line message)."""

class Key:
    """A secret key loaded from its file; never pickled, never printed."""

    @staticmethod
    def load(path: _PathLike) -> "Key":
        """Load a key file made by ``tracemark-embed keygen`` or :meth:`generate`."""
    @staticmethod
    def generate(path: _PathLike) -> "Key":
        """Create a new random key in a new owner-only file (never overwrites)."""
    @property
    def key_id(self) -> str:
        """The key's public id."""
    @property
    def path(self) -> "os.PathLike[str]":
        """The file the key was loaded from (a ``pathlib.Path``)."""

class Examiner:
    """Examines images for one key (patterns and plans prepared once), optionally
    resolving findings through a ledger (SQLite file or ``postgresql://`` URL, read-only)
    and against the released images (``originals``: image files, as
    ``tracemark-detect --original``; the record's ``original`` says which one the copy
    showed)."""

    def __init__(
        self, key: Key, ledger: Optional[_PathLike] = None, *, originals: Sequence[_PathLike] = ()
    ) -> None: ...
    @property
    def key_id(self) -> str: ...
    def examine(self, source: Union[_PathLike, _Array], *, name: Optional[str] = None) -> Dict[str, Any]:
        """One path or array; the dict ``tracemark-detect --json`` prints."""
    def examine_many(self, paths: List[_PathLike]) -> List[Dict[str, Any]]:
        """Many files in parallel, in input order; errors as ``{"type": "error", ...}``."""

@overload
def stamp(
    array: _Array,
    key: Key,
    payload: str = ...,
    psnr: float = ...,
    *,
    name: str = ...,
    return_record: Literal[False] = ...,
) -> _Array: ...
@overload
def stamp(
    array: _Array,
    key: Key,
    payload: str = ...,
    psnr: float = ...,
    *,
    name: str = ...,
    return_record: Literal[True],
) -> Tuple[_Array, Dict[str, Any]]: ...
