"""Append-only, per-sample generation caches that make evaluations resumable.

One cache file holds the generations of one key (``generation_key``: model fingerprint, benchmark,
prompt template, decoding parameters, backend with its dtype, device type, package versions and
``max_model_len``): ``<cache_dir>/generations/<benchmark>__<key digest>.jsonl``, one JSON
line per answer (a problem's sample ``s`` of a sampled run is its own line, ``sample_key``), appended and flushed as soon as the response exists, beside a ``.key.json`` that spells
out the key. An interrupted run leaves every finished sample on disk (a half-written last line is
dropped on the next open), and the next run generates only what is missing. Each line also stores a
hash of the exact prompt text, so an edited question or template is generated again rather than served
stale.

Grades live beside it (``.grades.jsonl``), keyed by the response's and the reference's hashes, the
grader and its version, so that re-reading a finished run of thousands of samples does not re-run
math-verify; a grade that timed out is never stored.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from l2s_lib.files import atomic_write_json, file_lock
from l2s_lib.fingerprint import data_fingerprint


def package_version(name: str) -> str | None:
    """The installed version of a distribution, None when it is absent."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


#: The packages whose version can change a backend's tokens (kernels, sampling, tokenisation).
BACKEND_PACKAGES = {"hf": ("torch", "transformers", "tokenizers"), "vllm": ("vllm", "torch", "transformers")}


def generation_key(*, model: str, benchmark: str, prompt: str, decoding: dict, identity: dict, device: str,
                   max_model_len: int | None) -> dict:
    """Everything that can change a cached generation's content, as the cache key.

    The model's fingerprint, the benchmark, the prompt template and the decoding parameters; the backend's
    identity (its name, dtype and whatever else it reports); the device *type* ("cpu" or "cuda": the same
    greedy decoding can flip a near-tie between the two); the versions of the packages that decode
    (``BACKEND_PACKAGES``); and ``max_model_len``, the context the engine may use (a vLLM run capped at a
    shorter context must never be reused by a corrected one). The exact prompt ids are checked per sample.
    """
    backend = identity.get("backend", "?")
    return {"model": model, "benchmark": benchmark, "prompt": prompt, "decoding": dict(decoding), **identity,
            "device": str(device).split(":")[0],
            "versions": {p: package_version(p) for p in BACKEND_PACKAGES.get(backend, ("torch", "transformers"))},
            "max_model_len": max_model_len}


def grade_key(idx, response: str, reference: str, grader: str, version: str) -> str:
    """What a stored grade depends on: the sample, the response, the reference, the grader and its version."""
    return "|".join([str(idx), text_sha(response), text_sha(str(reference)), grader, version])


def sample_key(idx, sample: int = 0) -> str:
    """The cache's name of answer ``sample`` to question ``idx``: ``"idx"`` for sample 0 (so greedy caches keep
    their keys), ``"idx#s"`` for the others. One cache file holds every sample of a decoding: the number of
    samples is not in the key, so a run of 16 samples reuses the first 8 of a run of 8 and adds the rest."""
    return str(idx) if sample == 0 else f"{idx}#{int(sample)}"


def text_sha(text: str, length: int = 16) -> str:
    """Short sha256 of a text (used to tie a cached response to its exact prompt)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


class GenerationCache:
    """The cache file of one key; ``load()`` the finished samples, ``append()`` new ones."""

    def __init__(self, root: str | os.PathLike, benchmark: str, key: dict):
        self.key = dict(key)
        self.digest = data_fingerprint(self.key)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in benchmark)
        folder = Path(root) / "generations"
        self.path = folder / f"{safe}__{self.digest}.jsonl"
        self.key_path = folder / f"{safe}__{self.digest}.key.json"
        self.grades_path = folder / f"{safe}__{self.digest}.grades.jsonl"

    @staticmethod
    def _repair(path: Path) -> None:
        """Drop a half-written last line (a run killed mid-write) so appends start on a fresh line."""
        if not path.exists():
            return
        fd = os.open(path, os.O_RDWR)
        try:
            with file_lock(path, fd):  # never cut a line another worker is writing right now
                _cut_partial_line(fd)
        finally:
            os.close(fd)

    def load(self) -> dict[str, dict]:
        """Finished samples by ``sample_key(idx, sample)`` (the newest line of a key wins: a regenerated sample).

        A line without ``sample`` is sample 0 (greedy runs, and caches written before sampled evaluation).
        """
        return {sample_key(rec["idx"], rec.get("sample", 0)): rec for rec in self._read(self.path) if "idx" in rec}

    def _read(self, path: Path) -> list[dict]:
        self._repair(path)
        if not path.exists():
            return []
        out = []
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a corrupt line is generated again rather than trusted
        return out

    def load_grades(self) -> dict[str, dict]:
        """Stored grades by grade key (see ``grade_key``)."""
        return {rec["key"]: rec for rec in self._read(self.grades_path) if "key" in rec}

    def append_grade(self, key: str, extracted: str | None, correct: bool) -> None:
        """Store one decided grade."""
        self._append(self.grades_path, {"key": key, "extracted": extracted, "correct": bool(correct)})

    def append(self, record: dict) -> None:
        """Append one sample and flush it to the operating system at once."""
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.key_path, self.key, indent=2, sort_keys=True, default=str)
        self._append(self.path, record)

    @staticmethod
    def _append(path: Path, record: dict) -> None:
        """Append one whole line under the file's lock: workers sharing a cache file (Ray tasks, a retry beside
        a slow first attempt) never interleave their lines, and a line cut by a killed writer is dropped
        first, so the new one is not glued to it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            with file_lock(path, fd):
                _cut_partial_line(fd)
                view = memoryview(data)
                while view:  # os.write may write less than asked (a signal, a full pipe of a network fs)
                    view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def clear(self) -> None:
        """Delete this key's cache file."""
        for p in (self.path, self.key_path, self.grades_path):
            p.unlink(missing_ok=True)


def _cut_partial_line(fd: int) -> None:
    """Truncate the open file ``fd`` after its last newline (its caller holds the file's lock)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    data = os.pread(fd, size, 0)
    os.ftruncate(fd, data.rfind(b"\n") + 1)
