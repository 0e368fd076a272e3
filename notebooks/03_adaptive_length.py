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
#   same generation cache): about 15 s after notebook 01 on 2 CPU cores; cold (no caches, merges and
#   generations made here) 4.5 minutes measured on a heavily loaded 2-core machine.
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

from l2s_lib import results, show  # noqa: E402
from l2s_lib.studies import adaptive_length, catalog, grid, notebooks, tables  # noqa: E402

# %% tags=["parameters"]
SIZE = ""  # organism size; "": l2s_lib.organisms.DEFAULT_SIZE (ignored when SYSTEM1/SYSTEM2 are given)
SYSTEM1 = ""  # System 1 (base) path or hub id; "": the organism
SYSTEM2 = ""  # System 2 path or hub id; "": the organism
DPO = ""  # DPO baseline path or hub id; "": the organism's (skipped for real models when empty)
CALIBRATION = ""  # calibration set for AIM / Sens; "": the organisms' data/organisms/calibration.jsonl
BENCHMARKS = "org_easy,org_levels,org_hard"  # comma-separated registered benchmarks (dataset-level ordering)
LEVEL_BENCHMARK = "org_levels"  # the benchmark with difficulty levels (math500 for real models)
METHODS = "task_arithmetic,ties,aim_ties,sens"  # merge method keys (catalog.METHODS)
SCALE = "7b"  # which of the paper's Table 7 rows sets the hyper-parameters, and the paper panel's scale
PROMPT = ""  # prompt for System 2, DPO and merges; "": each benchmark's default
MAX_NEW_TOKENS = 0  # generation budget for System 2, DPO and merges; 0: each benchmark's default
S1_PROMPT = ""  # prompt for System 1 ("cot" few-shot in the paper); "": each benchmark's default
S1_MAX_NEW_TOKENS = 0  # budget for System 1 (8192 in the paper); 0: each benchmark's default
LIMIT = 0  # N problems of each benchmark, evenly spread over its levels; 0: all
BACKEND = "hf"  # generation backend: hf or vllm
DEVICE = "cpu"  # cpu or cuda
BATCH_SIZE = 128  # generation batch size (hf backend)
SEED = 0  # merge seed (DARE masks, calibration sampling)
CONFIG = "default"  # name of this run's results folder (set by `l2s run`)

# %%
STUDY = "03_adaptive_length"
params = notebooks.current_parameters(STUDY, globals())
RUN = notebooks.run_name(STUDY, params)  # "default" only for the defaults: a changed parameter is another run
pair = catalog.resolve_pair(SIZE, SYSTEM1, SYSTEM2, DPO, CALIBRATION)
entries = catalog.comparison_entries(pair, METHODS, SCALE, SEED, S1_PROMPT, S1_MAX_NEW_TOKENS, PROMPT, MAX_NEW_TOKENS)
run = grid.evaluate(entries, BENCHMARKS, device=DEVICE, backend=BACKEND, batch_size=BATCH_SIZE, limit=LIMIT or None)
levels = adaptive_length.level_lengths(run.summary, LEVEL_BENCHMARK, run.labels())
ours_benchmarks = adaptive_length.benchmark_lengths(tables.overall(run.summary), run.labels(),
                                                    order=adaptive_length.mean_level_order(run.summary))
paper_benchmarks = adaptive_length.paper_benchmark_lengths(SCALE, run.labels("merge"))
results.write(levels, STUDY, "length_by_level", RUN, params);
results.write(ours_benchmarks, STUDY, "length_by_benchmark", RUN, params);

# %% [markdown]
# ## Figure 2a: mean length (tokens) by difficulty level

# %%
# NBVAL_CHECK_OUTPUT
show.table(adaptive_length.level_table(levels))

# %% [markdown]
# ## Rank correlation of length with difficulty, per model
#
# `rho`: Spearman's rho between each response's length and its level; `rho_of_means`: the same over the per-level
# means; `rising_steps`: share of consecutive levels whose mean length rises (1 = monotone); `growth`: mean
# length at the hardest level over the easiest. Then the dataset-level view, ours and the paper's (Table 1).

# %%
level_corr = adaptive_length.level_correlations(run.records, LEVEL_BENCHMARK, run.labels())
ours_corr = adaptive_length.benchmark_correlations(ours_benchmarks)
paper_corr = adaptive_length.benchmark_correlations(paper_benchmarks)
results.write(level_corr, STUDY, "level_correlations", RUN, params);
results.write(ours_corr, STUDY, "benchmark_correlations", RUN, params);
results.write(paper_corr, STUDY, "paper_benchmark_correlations", RUN, params);

# %%
# NBVAL_CHECK_OUTPUT
show.table(adaptive_length.rounded(level_corr), "by difficulty level", index=False)
show.table(adaptive_length.rounded(ours_corr), index=False,
           caption="by benchmark, ours (easiest -> hardest: " + " < ".join(adaptive_length.order_of(ours_benchmarks)) + ")")
show.table(adaptive_length.rounded(paper_corr), index=False,
           caption="by benchmark, paper (easiest -> hardest: " + " < ".join(adaptive_length.order_of(paper_benchmarks)) + ")")

# %% [markdown]
# ## Length change against System 2 at each level (%)

# %%
# NBVAL_CHECK_OUTPUT
shortening = adaptive_length.shortening_by_level(levels, pair.label2)
results.write(shortening.reset_index(), STUDY, "length_change_by_level", RUN, params);
show.table(shortening.round(1))

# %% [markdown]
# ## Figure 2a: the paper's lengths by benchmark beside ours by benchmark and by level

# %%
fig = adaptive_length.fig_adaptive_length(levels, ours_benchmarks, paper_benchmarks, run.roles(), LEVEL_BENCHMARK,
                                          paper_title=f"Paper {adaptive_length.PAPER_SCALES[SCALE]}",
                                          ours_title=f"This run ({pair.world})")
show.figure(fig, "fig2a_adaptive_length", results.figure_dir(STUDY, RUN));

# %% [markdown]
# ## Do the merges adapt their length to difficulty?

# %%
display(Markdown(adaptive_length.conclusion(level_corr, shortening, paper_corr, pair.label1, pair.label2,
                                            run.labels("merge"), world=pair.world, ours_corr=ours_corr)))

# %% [markdown]
# ## Provenance

# %%
print(notebooks.provenance(params))
