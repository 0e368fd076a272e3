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
# # 04 · Self-critique: do the merged models still reflect, and does reflecting repair errors?
#
# Reproduces **Table 6** and **Figure 2b** of Wu et al. (2025), *Unlocking Efficient Long-to-Short LLM Reasoning
# with Model Merging* (arXiv 2503.20641): the share of reflective responses (at least one of the paper's
# reflection keywords: wait, re-examine, recap, double-check, let me (just) check / verify) per benchmark and per
# difficulty level, and the keyword frequency per reflective response, under both keyword lists of
# `l2s_lib.metrics` (`paper`: the footnote as whole words; `paper-code`: the substring list of the paper's code).
# The paper's Table 6 (7B) is drawn beside ours.
#
# Beyond the paper, a **self-correction probe** (organisms only): each prompt is prefilled with a first pass that
# carries one planted arithmetic error and ends "So the answer is W."; how often does each model notice the error
# (a reflection keyword in its continuation) and repair it (right final answer)? Real models write free-form
# solutions with no fixed first pass to corrupt, so for them the probe is skipped with a printed reason.
#
# - **Default run** (organisms, CPU): the shipped organism pair and notebook 01's merges (same settings, same
#   generation cache), 10 probe problems per level. Runtime: 30 s after notebook 01 (measured 2026-12-01 on the project's 2-core CPU machine, cold caches, run in `make notebooks` order; the probe's
#   generations are cached too).
# - **Paper scale** (GPU, vLLM): `l2s run 04_self_critique paper_7b` (also `paper_1p5b`, `paper_14b`,
#   `paper_32b`), which executes this notebook with `notebooks/params/04_self_critique/paper_7b.yaml`.

# %%
import warnings

from IPython.display import Markdown, display
from tqdm import TqdmWarning

# Before l2s_lib imports tqdm.auto: without ipywidgets, text progress bars are fine (and the warning would
# print this machine's paths into the outputs).
warnings.simplefilter("ignore", TqdmWarning)

from l2s_lib import show  # noqa: E402
from l2s_lib.studies import folder, notebooks, self_critique  # noqa: E402

# %% tags=["parameters"]
SIZE = ""  # organism size; "": l2s_lib.organisms.DEFAULT_SIZE (ignored when SYSTEM1/SYSTEM2 are given)
SYSTEM1 = ""  # System 1 (base) path or hub id; "": the organism
SYSTEM2 = ""  # System 2 path or hub id; "": the organism
DPO = ""  # DPO baseline path or hub id; "": the organism's (skipped for real models when empty)
CALIBRATION = ""  # calibration set for AIM / Sens; "": the organisms' data/organisms/calibration.jsonl
BENCHMARKS = ["org_easy", "org_levels", "org_hard"]  # registered benchmarks
LEVEL_BENCHMARK = "org_levels"  # the benchmark with difficulty levels (math500 for real models)
METHODS = ["average", "task_arithmetic", "ties", "lore", "aim_ties", "sens"]  # merge method keys: Table 6's rows
SCALE = "7b"  # which of the paper's Table 7 rows sets the hyper-parameters (1p5b, 7b, 14b, 32b)
PROMPT = ""  # prompt for System 2, DPO and merges; "": each benchmark's default
MAX_NEW_TOKENS = 0  # generation budget for System 2, DPO and merges; 0: each benchmark's default
S1_PROMPT = ""  # prompt for System 1 ("cot" few-shot in the paper); "": each benchmark's default
S1_MAX_NEW_TOKENS = 0  # budget for System 1 (8192 in the paper); 0: each benchmark's default
LIMIT = 0  # N problems of each benchmark, evenly spread over its levels; 0: all
PROBE_PER_LEVEL = 10  # self-correction probe: problems per level of LEVEL_BENCHMARK (0: all)
PROBE_MAX_NEW_TOKENS = 200  # self-correction probe: budget of each continuation (a repair needs about 130 at level 5)
BACKEND = "hf"  # generation backend: hf or vllm
DEVICE = "cpu"  # cpu or cuda
BATCH_SIZE = 128  # generation batch size (hf backend and probe)
EXECUTOR = "local"  # where the grid runs: local (this machine) or ray (a Ray cluster: README, "Ray")
RAY_ADDRESS = ""  # ray: auto (the cluster of `ray start`), host:port, or "" for a Ray on this machine only
SEED = 0  # merge seed (DARE masks, calibration sampling) and the probe's planted errors
CONFIG = "default"  # name of this run's results folder (set by `l2s run`)

# %%
STUDY = self_critique.STUDY
params = notebooks.current_parameters(STUDY, globals())
self_critique.compute(params)  # merges, evaluations and the probe; everything below reads the result files only
DIR = folder.of(STUDY, params)  # data/results/04_self_critique/<run>: "default" only for the defaults
TABLES, FIGURES = self_critique.tables(DIR), self_critique.figures(DIR)

# %% [markdown]
# ## Table 6: reflective responses (%) per benchmark, ours (paper keyword list) and the paper's 7B
#
# Columns: one per benchmark; cells: share of responses with at least one reflection keyword (%).

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["table6"])
show.table(TABLES["paper_table6"]);

# %%
show.figure(FIGURES["tab6_reflection"], "tab6_reflection", folder.figure_dir(DIR));

# %% [markdown]
# ## Keyword lists side by side: reflective share (%) and keywords per reflective response, all benchmarks pooled
#
# Columns: `reflective_pct [list]`: share of reflective responses under each keyword list (%); `keyword_freq
# [list]`: keywords per reflective response under it.

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["keyword_lists"]);

# %% [markdown]
# ## Figure 2b: reflective responses and keyword frequency by difficulty level
#
# Columns: the difficulty levels of `LEVEL_BENCHMARK`; cells: reflective share (%), then keywords per reflective
# response (paper keyword list).

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["reflective_by_level"])
show.table(TABLES["keyword_freq_by_level"]);

# %%
show.figure(FIGURES["fig2b_reflection_by_level"], "fig2b_reflection_by_level", folder.figure_dir(DIR));

# %% [markdown]
# ## Beyond the paper: the self-correction probe
#
# Each prompt carries a first pass with one planted error (a running value off by 1-10, later steps consistent
# with it). *Noticed*: the continuation contains a reflection keyword; *repaired*: its final answer is right;
# *kept error*: its final answer is the planted one. Columns: the difficulty levels, then `all`; cells: share of
# problems repaired, then noticed (%).

# %%
# NBVAL_CHECK_OUTPUT
print(self_critique.probe_result(DIR).note())
show.table(TABLES["probe_repaired"])
show.table(TABLES["probe_noticed"]);

# %%
show.figure(FIGURES["tab6_correction_probe"], "tab6_correction_probe", folder.figure_dir(DIR));

# %% [markdown]
# ## Do the merges keep the paper's self-critique pattern?

# %%
display(Markdown(self_critique.verdict(DIR)))

# %% [markdown]
# ## Provenance

# %%
print(notebooks.provenance(params))
