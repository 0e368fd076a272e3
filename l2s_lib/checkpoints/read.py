"""Checkpoints, reading: open a model lazily by folder or hub id (``open_model``), and the names of its files.

A model is a folder with ``config.json`` and safetensors weights (one file or shards listed in
``model.safetensors.index.json``). Tensors are read one at a time, by positioned reads at the offsets
the safetensors header gives (not through a memory map: see ``ModelCheckpoint._read``), never the whole
model. Pickle checkpoints (``pytorch_model.bin``) are refused: loading them runs arbitrary code. A hub
id is downloaded (safetensors, json and tokenizer files only) when it is not a local folder.

Writing a merged model is ``checkpoints.write``; both use the file names and dtype codes defined here.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from l2s_lib.errors import CheckpointError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
PROVENANCE_FILE = "l2s_provenance.json"
EMBED_NAME = "model.embed_tokens.weight"
HEAD_NAME = "lm_head.weight"

#: Tokenizer files copied from the tokenizer source (whichever exist).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
GENERATION_CONFIG = "generation_config.json"
_PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "*.bin")
_HUB_PATTERNS = ["*.safetensors", "*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

# safetensors dtype codes <-> torch dtypes (https://github.com/huggingface/safetensors, format section).
_ST_TO_TORCH = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_TORCH_TO_ST = {v: k for k, v in _ST_TO_TORCH.items()}


def dtype_from_safetensors(code: str) -> torch.dtype:
    try:
        return _ST_TO_TORCH[code]
    except KeyError:
        raise CheckpointError(f"unsupported safetensors dtype {code!r}") from None


def dtype_to_safetensors(dtype: torch.dtype) -> str:
    try:
        return _TORCH_TO_ST[dtype]
    except KeyError:
        raise CheckpointError(f"cannot write dtype {dtype} to safetensors") from None


@dataclass(frozen=True)
class TensorInfo:
    """Where one stored tensor lives: its file, dtype, shape and byte range in the file."""

    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def read_safetensors_header(file: Path) -> dict[str, TensorInfo]:
    """Parse a safetensors header (names, dtypes, shapes, offsets) without reading any tensor data."""
    try:
        with open(file, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n <= 0 or n > 100 * 2**20:
                raise ValueError(f"implausible header size {n}")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: not a readable safetensors file ({exc})") from None
    start = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        b, e = meta["data_offsets"]
        out[name] = TensorInfo(name, file, dtype_from_safetensors(meta["dtype"]), tuple(meta["shape"]),
                               start + b, start + e)
    return out


class ModelCheckpoint:
    """One checkpoint folder read lazily (implements ``merge.base.TensorSource``).

    ``path`` is the local folder, ``config`` its parsed ``config.json``, ``ref`` what the user gave
    (folder or hub id). Tensors are listed from the safetensors headers in file order and loaded one at a
    time (tests check the bytes against ``safetensors.safe_open``).
    """

    def __init__(self, path: Path, ref: str | None = None, hub_id: str | None = None):
        self.path = Path(path)
        self.ref = ref or str(path)
        self.hub_id = hub_id
        cfg_file = self.path / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(f"{self.ref}: no config.json in {self.path}")
        try:
            self.config: dict[str, Any] = json.loads(cfg_file.read_text())
        except ValueError as exc:
            raise CheckpointError(f"{cfg_file}: invalid JSON ({exc})") from None
        self._infos = self._list_tensors()
        self._fds: dict[Path, int] = {}

    def _list_tensors(self) -> dict[str, TensorInfo]:
        index = self.path / INDEX_FILE
        files: list[Path]
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            files = sorted({self.path / f for f in weight_map.values()})
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise CheckpointError(f"{self.ref}: shards listed in {INDEX_FILE} are missing: {', '.join(missing)}")
        else:
            files = sorted(self.path.glob("*.safetensors"))
        if not files:
            pickles = sorted({p.name for pat in _PICKLE_PATTERNS for p in self.path.glob(pat)})
            if pickles:
                raise CheckpointError(
                    f"{self.ref}: only pickle weights ({', '.join(pickles)}); they are refused because loading "
                    "them can run arbitrary code. If you trust the file, convert it once with: python -c "
                    "\"from transformers import AutoModelForCausalLM as M; "
                    f"M.from_pretrained('{self.path}', dtype='auto').save_pretrained('{self.path}-safetensors')\" "
                    "and merge the new folder."
                )
            raise CheckpointError(f"{self.ref}: no safetensors weights in {self.path}")
        infos: dict[str, TensorInfo] = {}
        for f in files:
            for name, info in read_safetensors_header(f).items():
                if name in infos:
                    raise CheckpointError(f"{self.ref}: tensor {name} appears in two shards")
                infos[name] = info
        return infos

    # -- TensorSource protocol ------------------------------------------------------------------
    def tensor_names(self) -> list[str]:
        """Stored tensor names, in (shard, offset) order so that a pass over them reads files sequentially."""
        return [i.name for i in sorted(self._infos.values(), key=lambda i: (i.file.name, i.begin))]

    def get_tensor(self, name: str, out: torch.Tensor | None = None) -> torch.Tensor:
        """Load one stored tensor on CPU, in its stored dtype (a fresh tensor the caller owns, or read
        into ``out``: a contiguous uint8 buffer of the tensor's byte size)."""
        info = self.info(name)
        return self._read(info, info.begin, info.end - info.begin, out).reshape(info.shape)

    # -- extras ---------------------------------------------------------------------------------
    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise CheckpointError(f"{self.ref}: no tensor named {name}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._infos

    def get_rows(self, name: str, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``start:stop`` (first dimension) of a stored tensor, reading only those bytes."""
        info = self.info(name)
        rows = info.shape[0]
        start, stop = max(0, start), min(stop, rows)
        row_bytes = (info.end - info.begin) // max(rows, 1)
        flat = self._read(info, info.begin + start * row_bytes, (stop - start) * row_bytes, out)
        return flat.reshape((stop - start, *info.shape[1:]))

    def _read(self, info: TensorInfo, offset: int, nbytes: int, out: torch.Tensor | None = None) -> torch.Tensor:
        # Plain positioned reads into a buffer we own, rather than safe_open's memory map: bytes of a
        # mapped file that were touched stay in the process's resident set while the file is open, so a
        # pass over a model would show the whole model in RSS. pread leaves them in the page cache only,
        # releases the GIL (reads overlap with compute in the merge stream's reader thread) and copies once.
        buf = torch.empty(nbytes, dtype=torch.uint8) if out is None else out.view(torch.uint8).reshape(-1)[:nbytes]
        view = memoryview(buf.numpy())
        fd = self._fd(info.file)
        done = 0
        while done < nbytes:
            got = os.preadv(fd, [view[done:]], offset + done)
            if got == 0:
                raise CheckpointError(f"{info.file}: file is truncated (tensor {info.name})")
            done += got
        return buf.view(info.dtype)

    def _fd(self, file: Path) -> int:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(file, os.O_RDONLY)
        return fd

    def close(self) -> None:
        """Close the open shard files (they are reopened on the next read)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    @property
    def tied(self) -> bool:
        """True when the output head is the input embedding (no separate ``lm_head.weight`` stored)."""
        return HEAD_NAME not in self._infos and EMBED_NAME in self._infos

    @property
    def stored_dtype(self) -> torch.dtype:
        """The dtype of the embedding (or of the first floating tensor): the checkpoint's dtype."""
        infos = [self._infos[EMBED_NAME]] if EMBED_NAME in self._infos else list(self._infos.values())
        for i in infos:
            if i.dtype.is_floating_point:
                return i.dtype
        return torch.float32

    @property
    def total_bytes(self) -> int:
        return sum(i.end - i.begin for i in self._infos.values())

    def __repr__(self) -> str:
        return f"ModelCheckpoint({self.ref!r}, {len(self._infos)} tensors)"


def parameter_count(path_or_hub_id: str | os.PathLike) -> int:
    """Number of parameters of a checkpoint, from its safetensors headers (no weights are loaded).

    A tied head is stored once, so it is counted once, as ``model.num_parameters()`` does."""
    ck = open_model(path_or_hub_id)
    return sum(ck.info(n).numel for n in ck.tensor_names())


def resolve_model(path_or_hub_id: str | os.PathLike) -> tuple[Path, str | None]:
    """``(local folder, hub id or None)`` of a model given as a folder or a Hugging Face hub id.

    The one resolver of the library (merges, evaluations, parameter counts). An existing path must be a
    folder; anything else must look like a hub id (``name`` or ``org/name``, no path syntax) and is fetched
    with ``snapshot_download`` (safetensors, json and tokenizer files only; the local cache is reused, and
    works offline when the model is cached). ``CheckpointError`` says why otherwise.
    """
    ref = str(path_or_hub_id)
    local = Path(ref).expanduser()
    if local.exists():
        if not local.is_dir():
            raise CheckpointError(f"{ref}: a model must be a folder with config.json and safetensors weights")
        return local.resolve(), None
    looks_like_path = ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref
    if looks_like_path or not _HUB_ID.match(ref):
        raise CheckpointError(f"{ref}: no such model folder (and not a hub id of the form 'org/name')")
    return _download(ref), ref


def open_model(path_or_hub_id: str | os.PathLike) -> ModelCheckpoint:
    """Open a checkpoint from a local folder or a hub id (``resolve_model``); tensors are read lazily.

    Raises ``CheckpointError`` with the reason (missing folder, offline and not cached, pickle-only
    weights ...)."""
    folder, hub_id = resolve_model(path_or_hub_id)
    return ModelCheckpoint(folder, ref=str(path_or_hub_id), hub_id=hub_id)


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise CheckpointError(f"{repo_id}: huggingface_hub is needed to download models ({exc})") from None
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        folder = snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS)
    except Exception as exc:  # noqa: BLE001 - hub errors are many; all mean "cannot get it"
        hint = (
            "HF_HUB_OFFLINE is set and the model is not in the local cache"
            if offline
            else "the hub could not be reached or the repository does not exist"
        )
        raise CheckpointError(
            f"{repo_id}: not a local folder and cannot be downloaded ({hint}: {type(exc).__name__}: {exc}). "
            "Download it on a connected machine (hf download "
            f"{repo_id}) or pass a local folder."
        ) from None
    return Path(folder)
