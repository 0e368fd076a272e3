"""Checkpoints, writing: a merged model folder written atomically, tensor by tensor (``ShardedWriter``).

The output layout (shards, header of every shard, offsets of every tensor) is planned from the tensor
names, shapes and dtypes *before* the merge starts, so each merged tensor (or a block of its rows) is
written straight to its place in its shard and freed. The safetensors Python API (``save_file``) needs
every tensor of a file in memory at once, which would make the peak memory of a merge the size of a
shard (5 GB) rather than of a tensor; that is why this module writes the (simple, documented)
safetensors layout itself, and reads it back with the official library in the tests. Everything goes
into ``<target>.tmp-<random>`` beside the target, which is renamed at the very end: an interrupted merge
leaves no output folder.
"""

from __future__ import annotations

import json
import os
import socket
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch

from l2s_lib.checkpoints.read import INDEX_FILE, dtype_to_safetensors
from l2s_lib.errors import CheckpointError


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
