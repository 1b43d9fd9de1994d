import os
from typing import Any, Dict, List, Optional, Sequence, Union

from ._native import Examiner as Examiner
from ._native import Key as Key
from ._native import TracemarkError as TracemarkError
from ._native import stamp as stamp

_PathLike = Union[str, "os.PathLike[str]"]
__version__: str

def detect(
    source: Any,
    key: Key,
    ledger: Optional[_PathLike] = None,
    original: Union[None, _PathLike, Sequence[_PathLike]] = None,
) -> Dict[str, Any]: ...
def scan(
    paths: Sequence[_PathLike],
    key_path: _PathLike,
    ledger: Optional[_PathLike] = None,
    client: Any = None,
    chunk_size: Optional[int] = None,
) -> List[Dict[str, Any]]: ...
