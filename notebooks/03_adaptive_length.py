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
# # 03 · Adaptive length: does response length follow problem difficulty?
#
# Reproduces **Figure 2a** of Wu et al. (2025), *Unlocking Efficient Long-to-Short LLM Reasoning with Model
# Merging* (arXiv 2503.20641): mean response length by difficulty level for System 1, System 2 and the merges,
# with Spearman's rank correlation of length with level per model. Beside it, the paper's dataset-level ordering:
# Table 1's mean lengths per benchmark, benchmarks ranked from easiest to hardest by the mean accuracy of the
# table's models (GSM8K < MATH500 < ... < AIME24), and ours ranked by the mean level of their problems (the
# organisms' difficulty; by mean accuracy for benchmarks without levels).
#
# - **Default run** (organisms, CPU): the shipped organism pair, difficulty levels 1-5 of `org_levels` (the
#   MATH500 analogue) and the three organism benchmarks. The merges are notebook 01's entries (same settings,
#   same generation cache). Runtime: 20 s after notebook 01 (measured 2026-12-01 on the project's 2-core CPU machine, cold caches, run in `make notebooks` order).
# - **Paper scale** (GPU, vLLM): `l2s run 03_adaptive_length paper_7b` (also `paper_1p5b`, `paper_14b`,
#   `paper_32b`), which executes this notebook with `notebooks/params/03_adaptive_length/paper_7b.yaml`
#   (levels of MATH500).

# %%
import warnings

from IPython.display import Markdown, display
from tqdm import TqdmWarning

# Before l2s_lib imports tqdm.auto: without ipywidgets, text progress bars are fine (and the warning would
# print this machine's paths into the outputs).
warnings.simplefilter("ignore", TqdmWarning)

from l2s_lib import show  # noqa: E402
from l2s_lib.studies import adaptive_length, folder, notebooks  # noqa: E402

# %% tags=["parameters"]
SIZE = ""  # organism size; "": l2s_lib.organisms.DEFAULT_SIZE (ignored when SYSTEM1/SYSTEM2 are given)
SYSTEM1 = ""  # System 1 (base) path or hub id; "": the organism
SYSTEM2 = ""  # System 2 path or hub id; "": the organism
DPO = ""  # DPO baseline path or hub id; "": the organism's (skipped for real models when empty)
CALIBRATION = ""  # calibration set for AIM / Sens; "": the organisms' data/organisms/calibration.jsonl
BENCHMARKS = ["org_easy", "org_levels", "org_hard"]  # registered benchmarks (dataset-level ordering)
LEVEL_BENCHMARK = "org_levels"  # the benchmark with difficulty levels (math500 for real models)
METHODS = ["task_arithmetic", "ties", "aim_ties", "sens"]  # merge method keys (pipeline.catalog.METHODS)
SCALE = "7b"  # which of the paper's Table 7 rows sets the hyper-parameters, and the paper panel's scale
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
STUDY = adaptive_length.STUDY
params = notebooks.current_parameters(STUDY, globals())
adaptive_length.compute(params)  # merges and evaluations; everything below reads the result files only
DIR = folder.of(STUDY, params)  # data/results/03_adaptive_length/<run>: "default" only for the defaults
TABLES, FIGURES = adaptive_length.tables(DIR), adaptive_length.figures(DIR)

# %% [markdown]
# ## Figure 2a: mean length (tokens) by difficulty level
#
# Columns: the difficulty levels of `LEVEL_BENCHMARK`; cells: mean response length in tokens.

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["length_by_level"]);

# %% [markdown]
# ## Rank correlation of length with difficulty, per model
#
# `rho`: Spearman's rho between each response's length and its level; `rho_of_means`: the same over the per-level
# means; `rising_steps`: share of consecutive levels whose mean length rises (1 = monotone); `first_level_tokens` /
# `last_level_tokens`: mean length at the easiest / hardest level; `growth`: their ratio. Then the dataset-level
# view, ours and the paper's (Table 1): `rho` and `rising_steps` over the `n_benchmarks` benchmarks ranked by
# difficulty.

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["level_correlations"])
show.table(TABLES["benchmark_correlations"])
show.table(TABLES["paper_benchmark_correlations"]);

# %% [markdown]
# ## Length change against System 2 at each level (%)
#
# Columns: the difficulty levels; cells: the model's mean length against System 2's at that level (%; negative =
# shorter).

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["length_change_by_level"]);

# %% [markdown]
# ## Figure 2a: the paper's lengths by benchmark beside ours by benchmark and by level

# %%
show.figure(FIGURES["fig2a_adaptive_length"], "fig2a_adaptive_length", folder.figure_dir(DIR));

# %% [markdown]
# ## Do the merges adapt their length to difficulty?

# %%
display(Markdown(adaptive_length.verdict(DIR)))

# %% [markdown]
# ## Provenance

# %%
print(notebooks.provenance(params))
