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
# - **Default run** (organisms, CPU): every shipped organism size. Runtime: see the README's run map.
# - **Paper scale** (GPU, vLLM): `l2s run 02_scale_effects paper_7b` (one config per scale: `paper_1p5b`,
#   `paper_7b`, `paper_14b`, `paper_32b`); each run evaluates that scale's pair.

# %%
from IPython.display import Markdown, display

from l2s_lib import results, show
from l2s_lib.studies import catalog, grid, notebooks, scale, tables

# %% tags=["parameters"]
SIZES = ""  # organism sizes, comma-separated; "": every shipped size (ignored when SYSTEM1/SYSTEM2 are given)
SCALE_OF_SIZE = "1m:1p5b,6m:7b"  # which Table 7 row each size takes (SIZE:SCALE); others take 7b
SYSTEM1 = ""  # System 1 path or hub id for a real pair; "": the organisms
SYSTEM2 = ""  # System 2 path or hub id for a real pair; "": the organisms
SCALE = "7b"  # paper scale of the real pair (its Table 7 row)
CALIBRATION = ""  # calibration set for AIM / Sens; "": the organisms' set
BENCHMARKS = "org_easy,org_levels,org_hard"  # comma-separated registered benchmarks
METHODS = "average,task_arithmetic,ties,aim_ties,sens"  # the methods of Tables 2-4
THREE_MODEL = True  # Table 5: average merges of System 1, System 2 and DPO (organisms only)
PROMPT = ""  # prompt for System 2 and merges; "": each benchmark's default
MAX_NEW_TOKENS = 0  # budget for System 2 and merges; 0: each benchmark's default
S1_PROMPT = ""  # prompt for System 1; "": each benchmark's default
S1_MAX_NEW_TOKENS = 0  # budget for System 1; 0: each benchmark's default
LIMIT = 0  # N problems of each benchmark, evenly spread over its levels; 0: all
BACKEND = "hf"  # generation backend: hf or vllm
DEVICE = "cpu"  # cpu or cuda
BATCH_SIZE = 128  # generation batch size (hf backend)
SEED = 0  # merge seed
CONFIG = "default"  # name of this run's results folder (set by `l2s run`)

# %%
STUDY = "02_scale_effects"
params = notebooks.current_parameters(STUDY, globals())
RUN = notebooks.run_name(STUDY, params)  # "default" only for the defaults: a changed parameter is another run
pairs = scale.ladder_pairs(SIZES, SYSTEM1, SYSTEM2, CALIBRATION, SCALE)
mapping = scale.parse_mapping(SCALE_OF_SIZE) | ({SCALE: SCALE} if SYSTEM1 else {})
summary = scale.run_ladder(pairs, METHODS, mapping, BENCHMARKS, seed=SEED,
                           system1_eval=catalog.decoding(S1_PROMPT, S1_MAX_NEW_TOKENS),
                           system2_eval=catalog.decoding(PROMPT, MAX_NEW_TOKENS), device=DEVICE, backend=BACKEND,
                           batch_size=BATCH_SIZE, limit=LIMIT or None)
results.write(summary, STUDY, "summary", RUN, params);
ladder = scale.ladder_average(summary)
results.write(ladder, STUDY, "average", RUN, params);

# %% [markdown]
# ## Tables 2-4: accuracy (mean length) per benchmark at each size

# %%
# NBVAL_CHECK_OUTPUT
for size, part in summary.groupby("size", sort=False):
    show.table(tables.paper_style(part, system2="System 2"),
               f"{size}: {int(part['n_params'].iloc[0]):,} parameters, Table 7 row {part['scale_settings'].iloc[0]}")

# %% [markdown]
# ## Reflection (Tables 2-4): reflective responses and keyword frequency per reflective response

# %%
# NBVAL_CHECK_OUTPUT
reflection = scale.reflection_counts(summary)
results.write(reflection, STUDY, "reflection", RUN, params);
show.table(reflection.pivot_table(index=["size", "model"], columns="benchmark",
                                  values=["reflective_responses", "keyword_freq"], sort=False).round(1))

# %% [markdown]
# ## Accuracy gap and length change against model size, organisms beside the paper

# %%
# NBVAL_CHECK_OUTPUT
merge_labels = [catalog.METHODS[m] for m in METHODS.split(",")]
show.table(ladder[ladder.model.isin(merge_labels)][["size", "model", "accuracy_gap", "length_change_vs_system2_pct"]]
           .round(1), index=False)

# %%
fig = scale.fig_scale(ladder, scale.paper_average_tables(), merge_labels)
show.figure(fig, "fig3_scale_effects", results.figure_dir(STUDY, RUN));

# %%
display(Markdown(scale.scale_conclusion(ladder, merge_labels)))

# %% [markdown]
# ## Table 5: average merges of three related models
#
# The paper averaged Qwen2.5-32B, R1-Distill-32B and QwQ-32B in pairs and all together. The organism analogue is
# System 1, System 2 and the DPO model (System 2 fine-tuned towards short answers), at the default size.

# %%
# NBVAL_CHECK_OUTPUT
pair = catalog.resolve_pair(SIZES.split(",")[0] if SIZES else "")
if THREE_MODEL and pair.world == "organism" and pair.dpo:
    trio = {"System 1": pair.system1, "System 2": pair.system2, "DPO": pair.dpo}
    entries = catalog.pair_entries(pair) + scale.three_model_entries(trio, seed=SEED)
    table5 = grid.evaluate(entries, BENCHMARKS, device=DEVICE, backend=BACKEND, batch_size=BATCH_SIZE,
                           limit=LIMIT or None, progress=False).summary
    results.write(table5, STUDY, "three_model", RUN, params);
    show.table(tables.paper_style(table5, system2="System 2"))
else:
    print("Table 5 is asked of the organisms only (set THREE_MODEL and use the organism pair).")

# %% [markdown]
# ## Provenance

# %%
print(notebooks.provenance(params))
