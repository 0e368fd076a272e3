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
# # 05 · Sensitivity: hyper-parameters and calibration data
#
# Reproduces **Section 6** of Wu et al. (2025), *Unlocking Efficient Long-to-Short LLM Reasoning with Model
# Merging* (arXiv 2503.20641): how accuracy and length move with Task Arithmetic's alpha (including the
# "short-to-long" end, System 1 with a small share of System 2), with TIES's trim ratio k and DARE's drop rate p
# (the paper: keep p below 0.5), and with the calibration data of AIM and Sens (short, long or both answers; 10 /
# 20 / more samples). Each sweep varies one knob of the paper's 7B setting (`configs/merges/paper_7b_*.yaml`).
#
# - **Default run** (organisms, CPU): the `org_levels` benchmark (MATH500 analogue). Runtime: 1 min 12 s (measured 2026-12-01 on the project's 2-core CPU machine, cold caches, run in `make notebooks` order).
# - **Paper scale** (GPU, vLLM): `l2s run 05_sensitivity paper_7b`.

# %%
from IPython.display import Markdown, display

from l2s_lib import show
from l2s_lib.studies import folder, notebooks, sensitivity

# %% tags=["parameters"]
SIZE = ""  # organism size; "": l2s_lib.organisms.DEFAULT_SIZE (ignored when SYSTEM1/SYSTEM2 are given)
SYSTEM1 = ""  # System 1 path or hub id; "": the organism
SYSTEM2 = ""  # System 2 path or hub id; "": the organism
CALIBRATION = ""  # calibration set for AIM / Sens; "": the organisms' set
BENCHMARKS = ["org_levels"]  # registered benchmarks
SCALE = "7b"  # Table 7 row the sweeps start from
ALPHAS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0]  # Task Arithmetic alphas
TIES_KS = [0.2, 0.5, 0.8, 0.9]  # TIES trim ratios k (fraction removed)
DARE_PS = [0.1, 0.3, 0.5, 0.7]  # DARE drop rates p
CALIBRATION_SIDES = ["short", "long", "both"]  # which answers AIM / Sens calibrate on
CALIBRATION_NS = [10, 20, 100]  # calibration sample counts (the paper: 10, 20, 100)
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
SEED = 0  # merge seed (DARE masks, calibration sampling)
CONFIG = "default"  # name of this run's results folder (set by `l2s run`)

# %%
STUDY = sensitivity.STUDY
params = notebooks.current_parameters(STUDY, globals())
sensitivity.compute(params)  # merges and evaluations; everything below reads the result files only
DIR = folder.of(STUDY, params)  # data/results/05_sensitivity/<run>: "default" only for the defaults
TABLES, FIGURES = sensitivity.tables(DIR), sensitivity.figures(DIR)

# %% [markdown]
# ## Task Arithmetic: accuracy and length against alpha
#
# Columns: `value`: the knob (alpha here); `avg_accuracy`: mean accuracy (%); `length_change_vs_system2_pct`:
# length change against System 2 (%); `reflective_pct`: reflective responses (%). System 1 and System 2 first.

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["references"])
show.table(TABLES["alpha"]);

# %%
show.figure(FIGURES["fig5a_alpha_sweep"], "fig5a_alpha_sweep", folder.figure_dir(DIR));

# %% [markdown]
# ## TIES trim ratio and DARE drop rate
#
# Columns as above; `family`: `ties_k` (value = fraction of tau removed) or `dare_p` (value = drop rate).

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["trim_drop"]);

# %%
show.figure(FIGURES["fig5b_trim_drop"], "fig5b_trim_drop", folder.figure_dir(DIR));

# %% [markdown]
# ## Calibration data of AIM and Sens
#
# Columns as above; `family`: method and calibration side (`aim_short` ...), value = calibration samples.

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["calibration"]);

# %%
show.figure(FIGURES["fig5c_calibration"], "fig5c_calibration", folder.figure_dir(DIR));

# %% [markdown]
# ## Conclusion

# %%
display(Markdown(sensitivity.verdict(DIR)))

# %% [markdown]
# ## Provenance

# %%
print(notebooks.provenance(params))
