"""Where the benchmark files live and how to read them.

The data folder (see ``shared/data/README.md`` for the files and their fields) is, in order:
an explicit ``data_dir`` argument (``--data-dir``), the environment variable
``DYNAMIC_DLLM_DATA``, or ``shared/data`` beside the project checkout (``<checkout>/../shared/data``,
whatever the current directory), else ``../shared/data`` relative to the current directory.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Optional, Union

ENV_DATA = "DYNAMIC_DLLM_DATA"
#: ``<checkout>/../shared/data`` for an editable install / checkout; a plain install falls back to the cwd
_BESIDE_CHECKOUT = Path(__file__).resolve().parents[3] / "shared" / "data"
DEFAULT_DATA_DIR = _BESIDE_CHECKOUT if _BESIDE_CHECKOUT.is_dir() else Path("..") / "shared" / "data"


def resolve_data_dir(data_dir: Optional[Union[str, Path]] = None) -> Path:
    """The data folder to read from (not checked for existence; :func:`read_jsonl` reports a
    missing file with the folder it looked in and how to point elsewhere)."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(ENV_DATA)
    return Path(env) if env else DEFAULT_DATA_DIR


def read_jsonl(data_dir: Optional[Union[str, Path]], name: str) -> list[dict]:
    """All records of ``name`` (``.jsonl`` or gzip ``.jsonl.gz``) in the data folder."""
    folder = resolve_data_dir(data_dir)
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(
            f"benchmark file {name} not found in {folder.resolve()} "
            f"(pass --data-dir DIR or set {ENV_DATA}; the expected layout is shared/data/README.md)")
    opener = gzip.open if name.endswith(".gz") else open
    records = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not a JSON line ({exc.msg})") from None
    return records
