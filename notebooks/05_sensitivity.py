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
# - **Default run** (organisms, CPU): the `org_levels` benchmark (MATH500 analogue). Runtime: see the README.
# - **Paper scale** (GPU, vLLM): `l2s run 05_sensitivity paper_7b`.

# %%
from IPython.display import Markdown, display

from l2s_lib import results, show
from l2s_lib.studies import catalog, grid, notebooks, sensitivity, tables

# %% tags=["parameters"]
SIZE = ""  # organism size; "": l2s_lib.organisms.DEFAULT_SIZE (ignored when SYSTEM1/SYSTEM2 are given)
SYSTEM1 = ""  # System 1 path or hub id; "": the organism
SYSTEM2 = ""  # System 2 path or hub id; "": the organism
CALIBRATION = ""  # calibration set for AIM / Sens; "": the organisms' set
BENCHMARKS = "org_levels"  # comma-separated registered benchmarks
SCALE = "7b"  # Table 7 row the sweeps start from
ALPHAS = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.75,0.8,0.85,0.9,0.95,1.0"  # Task Arithmetic alphas
TIES_KS = "0.2,0.5,0.8,0.9"  # TIES trim ratios k (fraction removed)
DARE_PS = "0.1,0.3,0.5,0.7"  # DARE drop rates p
CALIBRATION_SIDES = "short,long,both"  # which answers AIM / Sens calibrate on
CALIBRATION_NS = "10,20,100"  # calibration sample counts (the paper: 10, 20, 100)
PROMPT = ""  # prompt for System 2 and merges; "": each benchmark's default
MAX_NEW_TOKENS = 0  # budget for System 2 and merges; 0: each benchmark's default
S1_PROMPT = ""  # prompt for System 1; "": each benchmark's default
S1_MAX_NEW_TOKENS = 0  # budget for System 1; 0: each benchmark's default
LIMIT = 0  # N problems of each benchmark, evenly spread over its levels; 0: all
BACKEND = "hf"  # generation backend: hf or vllm
DEVICE = "cpu"  # cpu or cuda
BATCH_SIZE = 128  # generation batch size (hf backend)
SEED = 0  # merge seed (DARE masks, calibration sampling)
CONFIG = "default"  # name of this run's results folder (set by `l2s run`)

# %%
STUDY = "05_sensitivity"
params = notebooks.current_parameters(STUDY, globals())
RUN = notebooks.run_name(STUDY, params)  # "default" only for the defaults: a changed parameter is another run
pair = catalog.resolve_pair(SIZE, SYSTEM1, SYSTEM2, "", CALIBRATION)
dec = catalog.decoding(PROMPT, MAX_NEW_TOKENS)
sweeps = (sensitivity.alpha_sweep(pair, sensitivity.floats(ALPHAS), SCALE, SEED, **dec)
          + sensitivity.trim_sweep(pair, sensitivity.floats(TIES_KS), SCALE, SEED, **dec)
          + sensitivity.drop_sweep(pair, sensitivity.floats(DARE_PS), SCALE, SEED, **dec)
          + sensitivity.calibration_sweep(pair, CALIBRATION_SIDES.split(","),
                                          [int(n) for n in CALIBRATION_NS.split(",")], SCALE, SEED, **dec))
entries = catalog.pair_entries(pair, catalog.decoding(S1_PROMPT, S1_MAX_NEW_TOKENS), dec)[:2] + sweeps
run = grid.evaluate(entries, BENCHMARKS, device=DEVICE, backend=BACKEND, batch_size=BATCH_SIZE, limit=LIMIT or None)
results.write(run.summary, STUDY, "summary", RUN, params);
avg = tables.average_table(run.summary, system2=pair.label2, models=run.labels()).set_index("model")
sweep = sensitivity.sweep_table(avg.reset_index(), sweeps)
results.write(sweep, STUDY, "sweep", RUN, params);

# %% [markdown]
# ## Task Arithmetic: accuracy and length against alpha

# %%
# NBVAL_CHECK_OUTPUT
cols = ["value", "avg_accuracy", "length_change_vs_system2_pct", "reflective_pct"]
show.table(avg.loc[[pair.label1, pair.label2], cols[1:]].round(1))
show.table(sweep[sweep.family == "ta_alpha"][cols].round(2), index=False)

# %%
fig = sensitivity.fig_alpha(sweep, avg.loc[pair.label1], avg.loc[pair.label2])
show.figure(fig, "fig5a_alpha_sweep", results.figure_dir(STUDY, RUN));

# %% [markdown]
# ## TIES trim ratio and DARE drop rate

# %%
# NBVAL_CHECK_OUTPUT
show.table(sweep[sweep.family.isin(["ties_k", "dare_p"])][["family"] + cols].round(2), index=False)

# %%
fig = sensitivity.fig_trim_drop(sweep, avg.loc[pair.label2])
show.figure(fig, "fig5b_trim_drop", results.figure_dir(STUDY, RUN));

# %% [markdown]
# ## Calibration data of AIM and Sens

# %%
# NBVAL_CHECK_OUTPUT
show.table(sweep[sweep.family.str.startswith(("aim_", "sens_"))][["family"] + cols].round(2), index=False)

# %%
fig = sensitivity.fig_calibration(sweep)
show.figure(fig, "fig5c_calibration", results.figure_dir(STUDY, RUN));

# %% [markdown]
# ## Conclusion

# %%
display(Markdown(sensitivity.sensitivity_conclusion(sweep, avg.loc[pair.label2, "avg_accuracy"])))

# %% [markdown]
# ## Provenance

# %%
print(notebooks.provenance(params))
