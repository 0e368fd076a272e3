"""The HTML edition: every executed study notebook as a page, and an index of the paper's claims and verdicts.

``make site`` (``python -m l2s_lib.site [OUT]``) writes ``site/`` (ignored by git):

- ``NN_study.html`` per committed notebook, rendered by nbconvert's ``lab`` template from the outputs as
  committed (nothing is re-executed, so a page shows exactly what the repository holds; figures are embedded
  in the page; no script from another host, see ``self_contained``);
- ``index.html``: one row per study with the claim it tests, its generated verdict and a link to its page, then
  the README's run map, and the canonical figures from ``figures/`` (copied to ``site/figures/``).

nbconvert rather than Jupyter Book: it is already a dependency of the notebooks extra, renders the stored
outputs without executing anything or needing a Node toolchain, and the index is one small page.
"""

from __future__ import annotations

import html
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

from l2s_lib import paths


@dataclass(frozen=True)
class StudyPage:
    """What the index says of one notebook."""

    study: str
    title: str
    tests: str  # the header's first "Reproduces/Tests ..." sentence, as markdown
    verdicts: tuple[str, ...]  # the generated conclusion (markdown) from the committed outputs
    page: str


def study_page(nb_path: Path) -> StudyPage:
    """Title, claim and verdicts of an executed notebook, read from its header cell and its outputs."""
    nb = nbformat.read(nb_path, as_version=4)
    header = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    title = next((ln.lstrip("# ").strip() for ln in header.splitlines() if ln.startswith("# ")), nb_path.stem)
    paragraphs = [p.strip() for p in header.split("\n\n")]
    tests = next((p for p in paragraphs if p.startswith(("Reproduces", "Tests"))), "")
    tests = tests.split(" of Wu et al.")[0] if tests else ""  # "Reproduces **Table 1** and **Figure 1**"
    # The generated conclusion is the notebook's last markdown output (the verdict cell before provenance).
    markdown = [out["data"]["text/markdown"].strip() for cell in nb.cells for out in cell.get("outputs", [])
                if out.get("output_type") in ("display_data", "execute_result") and "text/markdown" in out.get("data", {})]
    verdicts = markdown[-1:]
    return StudyPage(nb_path.stem, title, tests, tuple(verdicts), f"{nb_path.stem}.html")


def _markdown(text: str) -> str:
    import mistune

    return mistune.html(text)


def run_map(readme: Path) -> str:
    """The README's "Run map" section as markdown (empty when the README has none)."""
    text = readme.read_text()
    m = re.search(r"^## Run map\n(.*?)(?=^##+ )", text, re.M | re.S)
    return m.group(1).strip() if m else ""


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.35em .6em;vertical-align:top}
th{background:#f3f3f3}img.thumb{max-width:520px;border:1px solid #ddd;margin:.4em}code{background:#f5f5f5}"""


def index_html(pages: list[StudyPage], run_map_md: str, figure_files: list[str]) -> str:
    rows = []
    for p in pages:
        verdict = "".join(_markdown(v) for v in p.verdicts) or "<p><i>no verdict in the committed outputs</i></p>"
        rows.append(f'<tr><td><a href="{html.escape(p.page)}">{html.escape(p.title)}</a></td>'
                    f"<td>{_markdown(p.tests)}</td><td>{verdict}</td></tr>")
    figs = "".join(f'<a href="figures/{html.escape(f)}"><img class="thumb" src="figures/{html.escape(f)}" '
                   f'alt="{html.escape(f)}"></a>' for f in figure_files)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Long-to-short merging: the compendium"
            f"</title><style>{_STYLE}</style></head><body>"
            "<h1>Long-to-short reasoning by model merging: the compendium</h1>"
            "<p>Each study notebook tests claims of Wu et al. (2025), <i>Unlocking Efficient Long-to-Short LLM "
            "Reasoning with Model Merging</i> (arXiv 2503.20641), and ends with a verdict generated from its own "
            "numbers. The pages show the committed, executed notebooks.</p>"
            "<h2>Claims and verdicts</h2><table><tr><th>study</th><th>what it tests</th><th>verdict</th></tr>"
            + "".join(rows) + "</table><h2>Run map</h2>" + _markdown(run_map_md)
            + "<h2>Figures</h2>" + figs + "</body></html>\n")


_EXTERNAL_SCRIPT = re.compile(r"<script[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>", re.I)


def self_contained(page: str) -> str:
    """``page`` without the template's CDN scripts (require.js, MathJax): the edition opens offline and asks no
    other host for anything; the notebooks need neither (no widgets; math then shows as its TeX source)."""
    return _EXTERNAL_SCRIPT.sub("", page)


def build(out: str | Path | None = None, notebooks: list[Path] | None = None) -> Path:
    """Render the site into ``out`` (default ``<root>/site``); return the index path."""
    from nbconvert import HTMLExporter

    out = Path(out) if out else paths.ROOT / "site"
    notebooks = notebooks if notebooks is not None else sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no study notebooks under {paths.relative_to_root(paths.NOTEBOOKS)}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    exporter = HTMLExporter(template_name="lab")
    pages = []
    for nb_path in notebooks:
        body, _ = exporter.from_filename(str(nb_path))
        (out / f"{nb_path.stem}.html").write_text(self_contained(body))
        pages.append(study_page(nb_path))
    fig_dir = paths.ROOT / "figures"
    figure_files = sorted(p.name for p in fig_dir.glob("*.png")) if fig_dir.is_dir() else []
    if figure_files:
        shutil.copytree(fig_dir, out / "figures", ignore=shutil.ignore_patterns("*.pdf"))
    index = out / "index.html"
    index.write_text(index_html(pages, run_map(paths.ROOT / "README.md"), figure_files))
    return index


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    index = build(argv[0] if argv else None)
    print(f"site: {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
