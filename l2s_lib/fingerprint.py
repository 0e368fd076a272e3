"""Content fingerprints of checkpoints and files, used as cache keys and in provenance records.

A fingerprint must change whenever the weights change and must not depend on where the folder lives,
so it hashes contents, never paths or modification times. Weight files up to ``FULL_HASH_LIMIT`` bytes
are hashed whole; larger shards (multi-GB real models) hash their safetensors header (names, dtypes,
shapes, offsets) plus 1 MiB samples every 64 MiB, which keeps fingerprinting a 7B model to seconds
while any realistic change of weights (a merge, a fine-tune) still changes the samples.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

FULL_HASH_LIMIT = 256 * 2**20
_SAMPLE = 2**20
_STRIDE = 64 * 2**20
_CONFIG_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


def file_digest(path: str | Path, full: bool | None = None) -> str:
    """sha256 of a file (whole, or header + strided samples for large files); hex string."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    h.update(str(size).encode())
    with path.open("rb") as f:
        if full or (full is None and size <= FULL_HASH_LIMIT):
            for chunk in iter(lambda: f.read(8 * 2**20), b""):
                h.update(chunk)
        else:
            if path.suffix == ".safetensors":
                n = int.from_bytes(f.read(8), "little")
                h.update(f.read(n))
            for offset in range(0, size, _STRIDE):
                f.seek(offset)
                h.update(f.read(_SAMPLE))
    return h.hexdigest()


def model_fingerprint(model_dir: str | Path, length: int = 16) -> str:
    """A short content hash of a model folder: its weight files plus the config and tokenizer files."""
    root = Path(model_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"not a model folder: {model_dir}")
    h = hashlib.sha256()
    files = sorted(root.glob("*.safetensors")) + [root / n for n in _CONFIG_FILES if (root / n).is_file()]
    if not any(p.suffix == ".safetensors" for p in files):
        raise FileNotFoundError(f"no safetensors weights in {model_dir}")
    for p in files:
        h.update(p.name.encode())
        h.update(file_digest(p).encode())
    return h.hexdigest()[:length]


def data_fingerprint(obj, length: int = 16) -> str:
    """Hash of a JSON-serialisable object (parameters, a calibration set ...), key order independent."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
