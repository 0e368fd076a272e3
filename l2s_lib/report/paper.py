"""The paper's reported numbers (Wu et al. 2025, arXiv 2503.20641, Tables 1-7) as tidy tables.

The CSV files in ``data/paper/`` are transcribed from the paper; this module only reads them and gives the
methods and benchmarks the canonical names used everywhere else in the compendium, so that our results
and the paper's can be drawn side by side.
"""

from __future__ import annotations

import pandas as pd

from l2s_lib import paths

CITATION = "Wu et al. (2025), Unlocking Efficient Long-to-Short LLM Reasoning with Model Merging, arXiv:2503.20641"


#: The paper's benchmark labels -> the benchmark names of ``l2s_lib.eval``.
BENCHMARK_KEYS = {
    "GSM8K": "gsm8k",
    "MATH500": "math500",
    "Minerva Math": "minerva_math",
    "OlympiadBench": "olympiadbench",
    "College Math": "college_math",
    "AIME24": "aime24",
}

#: Scale label -> the file stem of its per-benchmark table.
SCALE_TABLES = {"1.5B": "table2_1p5b", "7B": "table1_7b", "14B": "table3_14b", "32B": "table4_32b"}


def read_table(stem: str) -> pd.DataFrame:
    """One of the paper's CSV tables by file stem (``table1_7b``, ``table6_reflection_7b`` ...)."""
    path = paths.PAPER / f"{stem}.csv"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in paths.PAPER.glob("*.csv")))
        raise FileNotFoundError(f"no paper table '{stem}' in {paths.relative_to_root(paths.PAPER)}; available: {available}")
    return pd.read_csv(path)


def role_of(method: str) -> str:
    """'system1', 'system2', 'dpo' or 'merge' for one of the paper's row labels."""
    if method.startswith(("Qwen2.5", "Qwen ")) and "+" not in method:
        return "system1"
    if method.startswith(("DeepSeek-R1", "QwQ")):
        return "system2"
    if method == "DPO":
        return "dpo"
    return "merge"


def per_benchmark(scale: str = "7B") -> pd.DataFrame:
    """The paper's per-benchmark table at one scale, with ``scale``, ``role`` and ``benchmark_key``.

    The catalogue key of each row (``pipeline.catalog.paper_method_keys``) is added by the pipeline, which
    sits above this module: the paper's tables know the paper's labels only."""
    if scale not in SCALE_TABLES:
        raise ValueError(f"unknown scale '{scale}'; the paper has {', '.join(SCALE_TABLES)}")
    df = read_table(SCALE_TABLES[scale])
    df.insert(0, "scale", scale)
    df["role"] = df["method"].map(role_of)
    df["benchmark_key"] = df["benchmark"].map(BENCHMARK_KEYS)
    return df


def all_scales() -> pd.DataFrame:
    """Tables 1-4 stacked (columns absent at a scale are NaN)."""
    return pd.concat([per_benchmark(s) for s in SCALE_TABLES], ignore_index=True)


#: Where the Qwen3-8B pair's numbers come from: the paper's repository, after the paper (data/paper/README.md).
REPOSITORY_CITATION = ("Wu et al., github.com/hahahawu/Long-to-Short-via-Model-Merging, README.md "
                       "(commit 6bc078e, June 2025): Early Test on DeepSeek-R1-0528-Qwen3-8B")


def repository_qwen3_8b() -> pd.DataFrame:
    """The repository's AIME24 results of DeepSeek-R1-0528-Qwen3-8B and its TIES merge with Qwen3-8B (avg@16,
    sampled at temperature 0.6, top_p 0.95, top_k 20), with ``scale``, ``role`` and ``benchmark_key`` as
    ``per_benchmark`` (the catalogue keys: ``pipeline.catalog.paper_method_keys``)."""
    df = read_table("repo_qwen3_8b_aime24")
    df.insert(0, "scale", "8B")
    df["role"] = df["method"].map(role_of)
    df["benchmark_key"] = df["benchmark"].map(BENCHMARK_KEYS)
    return df


def hyperparameters() -> pd.DataFrame:
    """Table 7, one row per (method, scale, parameter) with numeric values."""
    rows = []
    for rec in read_table("table7_hyperparameters").itertuples(index=False):
        for item in rec.hyperparameters.split(";"):
            key, value = item.split("=")
            rows.append({"method": rec.method, "scale": rec.scale, "param": key.strip(), "value": float(value)})
    return pd.DataFrame(rows)
