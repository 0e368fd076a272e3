"""Checkpoints: open a model lazily by folder or hub id, and write a merged one atomically.

Reading (``open_model``): a model is a folder with ``config.json`` and safetensors weights (one file or
shards listed in ``model.safetensors.index.json``). Tensors are read one at a time, by positioned reads
at the offsets the safetensors header gives (not through a memory map: see ``ModelCheckpoint._read``),
never the whole model. Pickle checkpoints (``pytorch_model.bin``) are refused:
loading them runs arbitrary code. A hub id is downloaded (safetensors, json and tokenizer files only) when
it is not a local folder.

Writing (``ShardedWriter``): the output layout (shards, header of every shard, offsets of every tensor)
is planned from the tensor names, shapes and dtypes *before* the merge starts, so each merged tensor (or
a block of its rows) is written straight to its place in its shard and freed. The safetensors Python
API (``save_file``) needs every tensor of a file in memory at once, which would make the peak memory of a
merge the size of a shard (5 GB) rather than of a tensor; that is why this module writes the (simple,
documented) safetensors layout itself, and reads it back with the official library in the tests.
Everything goes into ``<target>.tmp-<random>`` beside the target, which is renamed at the very end: an
interrupted merge leaves no output folder.
"""

from __future__ import annotations

import json
import os
import socket
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

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


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


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
        # releases the GIL (reads overlap with compute in the driver's reader thread) and copies once.
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


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    name: str
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int
    written: int = 0

    @property
    def row_bytes(self) -> int:
        rows = self.shape[0] if self.shape else 1
        return (self.end - self.begin) // max(rows, 1)


@dataclass
class _Shard:
    file_name: str
    tensors: list[tuple[str, torch.dtype, tuple[int, ...]]] = field(default_factory=list)
    nbytes: int = 0


def _nbytes(dtype: torch.dtype, shape: Iterable[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n * torch.empty((), dtype=dtype).element_size()


class ShardedWriter:
    """Write a model folder atomically: sharded safetensors + index, configs, tokenizer, provenance.

    Usage::

        with ShardedWriter(target, overwrite=False) as w:
            w.plan([(name, dtype, shape), ...])
            w.write(name, tensor)            # or w.write_rows(name, row0, block)
            w.write_json("config.json", cfg)
            w.commit()                       # checks completeness, renames tmp -> target

    Leaving the block without ``commit`` (an exception, Ctrl-C) deletes the temporary folder. A process
    killed outright leaves its ``<target>.tmp-*`` folder behind; the next writer of the same target
    removes such folders when the process that made them is gone.
    """

    def __init__(self, target: str | os.PathLike, overwrite: bool = False, max_shard_bytes: int = 5 * 10**9):
        self.target = Path(target).resolve()
        if self.target.exists() and not overwrite:
            raise CheckpointError(f"{self.target} exists; pass --overwrite (overwrite=True) to replace it")
        if self.target.exists() and not self.target.is_dir():
            raise CheckpointError(f"{self.target} exists and is not a folder")
        self.overwrite = overwrite
        self.max_shard_bytes = int(max_shard_bytes)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale_tmp(self.target)
        self.tmp = self.target.parent / f"{self.target.name}.tmp-{secrets.token_hex(4)}"
        self.tmp.mkdir()
        # The host too: on a filesystem shared by several nodes only a writer's own node can tell it is gone.
        (self.tmp / ".l2s-writer-pid").write_text(f"{os.getpid()} {socket.gethostname()}")
        self._slots: dict[str, _Slot] = {}
        self._fds: dict[Path, int] = {}
        self._unwritten: dict[Path, int] = {}  # bytes of each open shard still to write
        self._index: dict[str, Any] | None = None
        self._done = False

    # -- layout ---------------------------------------------------------------------------------
    def plan(self, tensors: list[tuple[str, torch.dtype, tuple[int, ...]]]) -> list[str]:
        """Assign tensors (in the given order) to shards of at most ``max_shard_bytes`` and create the
        files with their final headers. Returns the shard file names."""
        if self._slots:
            raise RuntimeError("plan() called twice")
        shards: list[_Shard] = []
        for name, dtype, shape in tensors:
            size = _nbytes(dtype, shape)
            if not shards or (shards[-1].tensors and shards[-1].nbytes + size > self.max_shard_bytes):
                shards.append(_Shard(""))
            shards[-1].tensors.append((name, dtype, tuple(shape)))
            shards[-1].nbytes += size
        n = len(shards)
        weight_map = {}
        total = 0
        for i, shard in enumerate(shards, 1):
            shard.file_name = f"model-{i:05d}-of-{n:05d}.safetensors"
            header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
            offset = 0
            for name, dtype, shape in shard.tensors:
                size = _nbytes(dtype, shape)
                header[name] = {"dtype": dtype_to_safetensors(dtype), "shape": list(shape),
                                "data_offsets": [offset, offset + size]}
                offset += size
            blob = json.dumps(header, separators=(",", ":")).encode()
            blob += b" " * (-len(blob) % 8)  # the format pads the header to 8-byte alignment
            start = 8 + len(blob)
            file = self.tmp / shard.file_name
            fd = os.open(file, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            self._fds[file] = fd
            os.pwrite(fd, len(blob).to_bytes(8, "little") + blob, 0)
            os.ftruncate(fd, start + offset)
            self._unwritten[file] = offset
            for name, dtype, shape in shard.tensors:
                b, e = header[name]["data_offsets"]
                self._slots[name] = _Slot(name, file, dtype, shape, start + b, start + e)
                weight_map[name] = shard.file_name
            total += offset
        self._index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        return [s.file_name for s in shards]

    def slot_dtype(self, name: str) -> torch.dtype:
        return self._slots[name].dtype

    # -- data -----------------------------------------------------------------------------------
    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Write a whole tensor (CPU, planned dtype and shape) at its place."""
        slot = self._slot(name)
        if tuple(tensor.shape) != slot.shape:
            raise RuntimeError(f"{name}: shape {tuple(tensor.shape)} != planned {slot.shape}")
        self._pwrite(slot, tensor, slot.begin)

    def write_rows(self, name: str, row_start: int, block: torch.Tensor) -> None:
        """Write rows ``row_start:row_start+len(block)`` of a tensor (first dimension)."""
        slot = self._slot(name)
        if tuple(block.shape[1:]) != slot.shape[1:] or row_start + block.shape[0] > slot.shape[0]:
            raise RuntimeError(f"{name}: row block {tuple(block.shape)} at {row_start} does not fit {slot.shape}")
        self._pwrite(slot, block, slot.begin + row_start * slot.row_bytes)

    def _slot(self, name: str) -> _Slot:
        try:
            return self._slots[name]
        except KeyError:
            raise RuntimeError(f"{name} was not planned") from None

    def _pwrite(self, slot: _Slot, tensor: torch.Tensor, offset: int) -> None:
        if tensor.dtype != slot.dtype:
            raise RuntimeError(f"{slot.name}: dtype {tensor.dtype} != planned {slot.dtype}")
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        # A flat byte view of the tensor's memory: no copy for contiguous tensors.
        data = memoryview(tensor.contiguous().reshape(-1).view(torch.uint8).numpy())
        fd = self._fds[slot.file]
        done = 0
        while done < len(data):  # pwrite may write less than asked
            done += os.pwrite(fd, data[done:], offset + done)
        slot.written += len(data)
        self._unwritten[slot.file] -= len(data)
        if self._unwritten[slot.file] == 0:
            # The shard is complete: flush it to the disk now, in the writing thread, while the merge goes on
            # with the next shard, rather than every shard at commit (where nothing else is left to overlap).
            os.fsync(fd)
            os.close(fd)
            del self._fds[slot.file]

    # -- side files -----------------------------------------------------------------------------
    def write_json(self, file_name: str, obj: Any) -> None:
        (self.tmp / file_name).write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")

    def copy_files(self, src_dir: Path, names: Iterable[str]) -> list[str]:
        """Copy the named files that exist in ``src_dir``; returns those copied."""
        copied = []
        for n in names:
            src = Path(src_dir) / n
            if src.is_file():
                shutil.copyfile(src, self.tmp / n)
                copied.append(n)
        return copied

    # -- end ------------------------------------------------------------------------------------
    def commit(self) -> Path:
        """Check every planned byte was written, write the index, and rename into place."""
        incomplete = [s.name for s in self._slots.values() if s.written != s.end - s.begin]
        if incomplete:
            raise RuntimeError(f"merge incomplete: {len(incomplete)} tensors not fully written, e.g. {incomplete[:3]}")
        for fd in self._fds.values():  # shards complete but still open (normally none: see _pwrite)
            os.fsync(fd)
            os.close(fd)
        self._fds.clear()
        if self._index is not None:
            self.write_json(INDEX_FILE, self._index)
        (self.tmp / ".l2s-writer-pid").unlink()
        if not self.overwrite:
            try:  # atomic: of two writers of one target, exactly one renames its folder into place
                self.tmp.rename(self.target)
            except OSError as exc:
                raise CheckpointError(f"{self.target} was created by another writer while this one ran") from exc
        elif self.target.exists():
            # Replace in two renames so that the old output disappears only once the new one is complete.
            old = self.target.parent / f"{self.target.name}.tmp-old-{secrets.token_hex(4)}"
            self.target.rename(old)
            self.tmp.rename(self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.tmp.rename(self.target)
        self._done = True
        return self.target

    def abort(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        if not self._done:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> "ShardedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._done:
            self.abort()


def _sweep_stale_tmp(target: Path) -> None:
    """Remove ``<target>.tmp-*`` folders left by writers that were killed (their process is gone)."""
    for d in target.parent.glob(f"{target.name}.tmp-*"):
        pid_file = d / ".l2s-writer-pid"
        try:
            pid, _, host = pid_file.read_text().partition(" ")
            pid = int(pid)
        except (OSError, ValueError):
            continue  # not ours, or being created right now: leave it
        if host in ("", socket.gethostname()) and not _pid_alive(pid):
            shutil.rmtree(d, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
