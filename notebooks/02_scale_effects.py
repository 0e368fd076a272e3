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
# # 02 · Scale effects: the same merges along a ladder of model sizes
#
# Reproduces **Tables 2-5** of Wu et al. (2025), *Unlocking Efficient Long-to-Short LLM Reasoning with Model
# Merging* (arXiv 2503.20641). The paper found that merging fails at 1.5B (accuracy drops on hard problems) and that
# at 14B/32B merges keep accuracy but shorten answers only a little. Here every size of the organism ladder is merged
# with the paper's per-scale hyper-parameters (Table 7; the smallest organism takes the 1.5B row, the next the 7B
# row), and the figure puts accuracy gap and length change against model size beside the paper's four scales. Tables
# 2-4's reflection columns (reflective responses, keyword frequency) are computed the same way. Table 5's question
# (average merges of three related models) is asked of System 1, System 2 and the DPO model.
#
# - **Default run** (organisms, CPU): every shipped organism size. Runtime: 2 min 0 s (measured 2026-12-01 on the project's 2-core CPU machine, cold caches, run in `make notebooks` order).
# - **Paper scale** (GPU, vLLM): `l2s run 02_scale_effects paper_7b` (one config per scale: `paper_1p5b`,
#   `paper_7b`, `paper_14b`, `paper_32b`); each run evaluates that scale's pair.

# %%
from IPython.display import Markdown, display

from l2s_lib import show
from l2s_lib.studies import folder, notebooks, scale

# %% tags=["parameters"]
SIZES = []  # organism sizes; []: every shipped size (ignored when SYSTEM1/SYSTEM2 are given)
SCALE_OF_SIZE = {"1m": "1p5b", "6m": "7b"}  # which Table 7 row each size takes; others take 7b
SYSTEM1 = ""  # System 1 path or hub id for a real pair; "": the organisms
SYSTEM2 = ""  # System 2 path or hub id for a real pair; "": the organisms
SCALE = "7b"  # paper scale of the real pair (its Table 7 row)
CALIBRATION = ""  # calibration set for AIM / Sens; "": the organisms' set
BENCHMARKS = ["org_easy", "org_levels", "org_hard"]  # registered benchmarks
METHODS = ["average", "task_arithmetic", "ties", "aim_ties", "sens"]  # the methods of Tables 2-4
THREE_MODEL = True  # Table 5: average merges of System 1, System 2 and DPO (organisms only)
PROMPT = ""  # prompt for System 2 and merges; "": each benchmark's default
MAX_NEW_TOKENS = 0  # budget for System 2 and merges; 0: each benchmark's default
S1_PROMPT = ""  # prompt for System 1; "": each benchmark's default
S1_MAX_NEW_TOKENS = 0  # budget for System 1; 0: each benchmark's default
LIMIT = 0  # N problems of each benchmark, evenly spread over its levels; 0: all
BACKEND = "hf"  # generation backend: hf or vllm
DEVICE = "cpu"  # cpu or cuda
BATCH_SIZE = 128  # generation batch size (hf backend)
EXECUTOR = "local"  # where the grid runs: local (this machine) or ray (a Ray cluster: README, "Ray")
RAY_ADDRESS = ""  # ray: auto (the cluster of `ray start`), host:port, or "" for a Ray on this machine only
SEED = 0  # merge seed
CONFIG = "default"  # name of this run's results folder (set by `l2s run`)

# %%
STUDY = scale.STUDY
params = notebooks.current_parameters(STUDY, globals())
scale.compute(params)  # merges and evaluations; everything below reads the result files only
DIR = folder.of(STUDY, params)  # data/results/02_scale_effects/<run>: "default" only for the defaults
TABLES, FIGURES = scale.tables(DIR), scale.figures(DIR)

# %% [markdown]
# ## Tables 2-4: accuracy (mean length) per benchmark at each size
#
# Columns: one per benchmark, `accuracy % (mean length in tokens)`; `Avg.`: mean accuracy; `length change`: mean
# per-benchmark length change against that size's System 2.

# %%
# NBVAL_CHECK_OUTPUT
for name in [n for n in TABLES if n.startswith("size ")]:
    show.table(TABLES[name])

# %% [markdown]
# ## Reflection (Tables 2-4): reflective responses and keyword frequency per reflective response
#
# Columns: `keyword_freq` (reflection keywords per reflective response) and `reflective_responses` (count), each
# per benchmark; rows: size and model.

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["reflection"]);

# %% [markdown]
# ## Accuracy gap and length change against model size, organisms beside the paper
#
# Columns: `accuracy_gap`: the merge's mean accuracy minus System 2's at the same size (points);
# `length_change_vs_system2_pct`: its length change against that System 2 (%).

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["ladder"]);

# %%
show.figure(FIGURES["fig3_scale_effects"], "fig3_scale_effects", folder.figure_dir(DIR));

# %%
display(Markdown(scale.verdict(DIR)))

# %% [markdown]
# ## Table 5: average merges of three related models
#
# The paper averaged Qwen2.5-32B, R1-Distill-32B and QwQ-32B in pairs and all together. The organism analogue is
# System 1, System 2 and the DPO model (System 2 fine-tuned towards short answers), at the default size. Columns
# as in Tables 2-4.

# %%
# NBVAL_CHECK_OUTPUT
if "table5" in TABLES:
    show.table(TABLES["table5"])
else:
    print(folder.settings(DIR)["three_model_note"])

# %% [markdown]
# ## Provenance

# %%
print(notebooks.provenance(params))
