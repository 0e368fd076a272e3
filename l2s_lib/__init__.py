"""l2s_lib: long-to-short reasoning by model merging.

A small library behind the compendium that reproduces Wu et al. (2025), "Unlocking Efficient
Long-to-Short LLM Reasoning with Model Merging" (arXiv 2503.20641):

- ``l2s_lib.checkpoints``: open models by path or hub id, lazy safetensors reading, atomic writing;
- ``l2s_lib.merge``: the registry of merge methods and the streaming merge driver;
- ``l2s_lib.eval``: benchmarks, prompts, generation backends, grading, resumable caches;
- ``l2s_lib.metrics``: accuracy, length, length change, reflection;
- ``l2s_lib.organisms``: the synthetic System 1 / System 2 world and its tiny Qwen2 models;
- ``l2s_lib.paths``: every location of the repository, from one place.
"""

__version__ = "0.1.0"

import warnings as _warnings

# tqdm.auto falls back to text bars when ipywidgets is absent (our notebooks' committed outputs are text);
# its warning about that says nothing a reader needs.
_warnings.filterwarnings("ignore", message="IProgress not found")
