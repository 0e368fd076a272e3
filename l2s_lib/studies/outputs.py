"""Tidy executed notebooks: one final line per progress bar, not every redraw.

tqdm redraws a bar with carriage returns; a kernel sends each redraw as its own stream message, so an executed
notebook stored dozens of outputs per bar (and papermill runs the same). ``tidy`` keeps what a terminal would
finally show: consecutive stream outputs of the same stream are joined and each line keeps only the text after
its last carriage return. Everything else (tables, figures, markdown) is left as it is.

    python -m l2s_lib.studies.outputs notebooks/01_merge_methods.ipynb ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat


def terminal_text(text: str) -> str:
    """What a terminal shows after printing ``text``: every line cut to the part after its last ``\\r``."""
    lines = text.split("\n")
    out = []
    for line in lines:
        parts = [p for p in line.split("\r") if p]
        out.append(parts[-1] if parts else "")
    return "\n".join(out)


def tidy_cell_outputs(outputs: list) -> list:
    """``outputs`` of one cell with consecutive stream outputs of one stream merged and redraws dropped."""
    merged: list = []
    for out in outputs:
        if (out.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == out.get("name")):
            merged[-1]["text"] += out["text"]
        else:
            merged.append(out)
    for out in merged:
        if out.get("output_type") == "stream":
            out["text"] = terminal_text(out["text"])
    return [o for o in merged if not (o.get("output_type") == "stream" and not o["text"].strip())]


def tidy(path: str | Path) -> bool:
    """Tidy the notebook at ``path`` in place; return whether anything changed."""
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = tidy_cell_outputs(cell.outputs)
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after + ("" if after.endswith("\n") else "\n"))
    return after != before


def main(argv: list[str] | None = None) -> int:
    for name in (argv if argv is not None else sys.argv[1:]):
        tidy(name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
