# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Merge methods: accuracy and response length of every method
#
# Reproduces **Table 1** and **Figure 1** of Wu et al. (2025), *Unlocking Efficient Long-to-Short LLM Reasoning
# with Model Merging* (arXiv 2503.20641): System 1, System 2, the DPO baseline and every merge method, evaluated
# on three benchmarks; accuracy (mean length in tokens) per benchmark, the mean accuracy and the paper's length
# change (mean over benchmarks of the per-benchmark relative change against System 2). The paper's 7B panel is
# drawn beside ours. Merge settings are the paper's Table 7 (7B row) from `configs/merges/paper_7b_*.yaml`.
#
# - **Default run** (organisms, CPU): the shipped organism pair, benchmarks `org_easy` / `org_levels` /
#   `org_hard` (analogues of GSM8K, MATH500 and AIME24). Runtime: 58 s (measured 2026-12-01 on the project's 2-core CPU machine, cold caches, run in `make notebooks` order).
# - **Paper scale** (GPU, vLLM): `l2s run 01_merge_methods paper_7b` (also `paper_1p5b`, `paper_14b`,
#   `paper_32b`), which executes this notebook with `notebooks/params/01_merge_methods/paper_7b.yaml`.

# %%
from IPython.display import Markdown, display

from l2s_lib import show
from l2s_lib.studies import folder, merge_methods, notebooks

# %% tags=["parameters"]
SIZE = ""  # organism size; "": l2s_lib.organisms.DEFAULT_SIZE (ignored when SYSTEM1/SYSTEM2 are given)
SYSTEM1 = ""  # System 1 (base) path or hub id; "": the organism
SYSTEM2 = ""  # System 2 path or hub id; "": the organism
DPO = ""  # DPO baseline path or hub id; "": the organism's (skipped for real models when empty)
CALIBRATION = ""  # calibration set for AIM / Sens; "": the organisms' data/organisms/calibration.jsonl
BENCHMARKS = ["org_easy", "org_levels", "org_hard"]  # registered benchmarks
METHODS = ["average", "task_arithmetic", "ties", "dare", "dare_ta", "dare_ties", "lore", "twin", "aim_ties", "sens",
           "slerp", "iso_c"]  # method keys (l2s_lib.pipeline.catalog.METHODS)
SCALE = "7b"  # which of the paper's Table 7 rows sets the hyper-parameters (1p5b, 7b, 14b, 32b)
PROMPT = ""  # prompt for System 2, DPO and merges; "": each benchmark's default
MAX_NEW_TOKENS = 0  # generation budget for System 2, DPO and merges; 0: each benchmark's default
S1_PROMPT = ""  # prompt for System 1 ("cot" few-shot in the paper); "": each benchmark's default
S1_MAX_NEW_TOKENS = 0  # budget for System 1 (8192 in the paper); 0: each benchmark's default
LIMIT = 0  # N problems of each benchmark, evenly spread over its levels; 0: all
BACKEND = "hf"  # generation backend: hf or vllm
DEVICE = "cpu"  # cpu or cuda
BATCH_SIZE = 128  # generation batch size (hf backend)
EXECUTOR = "local"  # where the grid runs: local (this machine) or ray (a Ray cluster: README, "Ray")
RAY_ADDRESS = ""  # ray: auto (the cluster of `ray start`), host:port, or "" for a Ray on this machine only
SEED = 0  # merge seed (DARE masks, calibration sampling)
CONFIG = "default"  # name of this run's results folder (set by `l2s run`)

# %%
STUDY = merge_methods.STUDY
params = notebooks.current_parameters(STUDY, globals())
merge_methods.compute(params)  # merges and evaluations; everything below reads the result files only
DIR = folder.of(STUDY, params)  # data/results/01_merge_methods/<run>: "default" only for the defaults
TABLES, FIGURES = merge_methods.tables(DIR), merge_methods.figures(DIR)

# %% [markdown]
# ## Table 1: accuracy (mean length) per benchmark, mean accuracy and length change vs System 2
#
# Columns: one per benchmark, `accuracy % (mean length in tokens)`; `Avg.`: mean accuracy over the benchmarks;
# `length change`: mean over benchmarks of the per-benchmark relative length change against System 2.

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["table1"]);

# %% [markdown]
# ## Figure 1: mean accuracy against length change, the paper's 7B models beside ours

# %%
show.figure(FIGURES["fig1_merge_methods"], "fig1_merge_methods", folder.figure_dir(DIR));

# %% [markdown]
# ## Does long-to-short merging hold here?
#
# Columns: `accuracy_gap`: mean accuracy minus System 2's (points); `length_change_pct`: length change against
# System 2 (%); `verdict`: which long-to-short goals the merge meets (`L2S` = both).

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["merge_verdicts"]);

# %%
display(Markdown(merge_methods.verdict(DIR)))

# %% [markdown]
# ## Provenance

# %%
print(notebooks.provenance(params))
