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
# # 06 · Task vectors: is tau = System 2 - System 1 low-rank, and does that explain the SVD methods?
#
# Tests **Section 4.3's hypothesis** of Wu et al. (2025), *Unlocking Efficient Long-to-Short LLM Reasoning with
# Model Merging* (arXiv 2503.20641): the SVD methods (LoRE-Merging, Twin-Merging) fare worse because the task
# vector of a long-CoT fine-tune is not low-rank. The anatomy of tau: its norm per layer and tensor kind,
# singular-value spectra and effective rank (beside a Gaussian matrix of the same shape, the structure-free
# reference), sparsity (share of L1 mass in the largest 20% entries), and what each SVD method's spectral step
# does to it at the paper's settings (Twin's kept rank, LoRE's threshold, Iso-C's flattened spectrum). Then
# notebook 01's results for LoRE, Twin and Iso-C against Task Arithmetic: this study's declared input (run
# `01_merge_methods` with the same CONFIG first; `make reproduce` runs them in that order).
#
# - **Default run** (organisms, CPU): the shipped organism pair; 14 s (no generation; measured 2026-12-01 on the project's 2-core CPU machine, cold caches, run in `make notebooks` order).
# - **Paper scale**: `l2s run 06_task_vectors paper_7b` (also `paper_1p5b`, `paper_14b`, `paper_32b`), which
#   executes this notebook with `notebooks/params/06_task_vectors/paper_7b.yaml` (one SVD per weight matrix: use
#   `DEVICE: cuda`; reading both checkpoints dominates).

# %%
import warnings

from IPython.display import Markdown, display
from tqdm import TqdmWarning

# Before l2s_lib imports tqdm.auto: without ipywidgets, text progress bars are fine (and the warning would
# print this machine's paths into the outputs).
warnings.simplefilter("ignore", TqdmWarning)

from l2s_lib import show  # noqa: E402
from l2s_lib.studies import anatomy, folder, notebooks  # noqa: E402

# %% tags=["parameters"]
SIZE = ""  # organism size; "": l2s_lib.organisms.DEFAULT_SIZE (ignored when SYSTEM1/SYSTEM2 are given)
SYSTEM1 = ""  # System 1 (base) path or hub id; "": the organism
SYSTEM2 = ""  # System 2 path or hub id; "": the organism
SCALE = "7b"  # which paper configs set the SVD methods' settings (LoRE threshold, Twin rank ratio)
DEVICE = "cpu"  # where the SVDs run: cpu or cuda
SEED = 0  # seed of the Gaussian reference matrices
CONFIG = "default"  # name of this run's results folder (set by `l2s run`); notebook 01's results are read from it

# %%
STUDY = anatomy.STUDY
params = notebooks.current_parameters(STUDY, globals())
anatomy.compute(params)  # reads notebook 01's results, then measures tau; everything below reads the result files
DIR = folder.of(STUDY, params)  # data/results/06_task_vectors/<run>: "default" only for the defaults
TABLES, FIGURES = anatomy.tables(DIR), anatomy.figures(DIR)

# %% [markdown]
# ## Anatomy of tau per tensor kind
#
# `relative_norm`: ||tau|| / ||W_S1||; `top20_mass`: share of |tau|'s L1 mass in its largest 20% entries (0.2 =
# flat); for matrices (medians): effective rank / full rank and the share of directions holding 90% of the energy,
# each beside a Gaussian matrix of the same shape; `twin_topr_energy`: energy in Twin's kept rank;
# `lore_removed_energy`: energy LoRE's threshold removes; `iso_c_error`: energy changed by flattening the spectrum.

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["kinds"]);

# %%
show.figure(FIGURES["fig6_task_vectors"], "fig6_task_vectors", folder.figure_dir(DIR));

# %% [markdown]
# ## The SVD methods against Task Arithmetic (notebook 01)
#
# Columns: `accuracy_gap` / `length_change_pct`: against System 2 (points / %); `accuracy_vs_ta` /
# `length_vs_ta_points`: the same against Task Arithmetic (points).

# %%
# NBVAL_CHECK_OUTPUT
show.table(TABLES["svd_versus_ta"]);

# %% [markdown]
# ## Does the low-rank structure explain how the SVD methods fare?

# %%
display(Markdown(anatomy.verdict(DIR)))

# %% [markdown]
# ## Provenance

# %%
print(notebooks.provenance(params))
