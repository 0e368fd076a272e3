import json

import pandas as pd

import pytest

from l2s_lib import paths
from l2s_lib.pipeline import grid


def test_entries_validate_their_shape():
    with pytest.raises(ValueError, match="role must be one of"):
        grid.Entry("x", "teacher", model="m")
    with pytest.raises(ValueError, match="exactly one of"):
        grid.Entry("x", "merge")
    e = grid.merge("TA 0.7", "task_arithmetic", "s1", ["s2"], model_params={"weight": 0.7})
    assert e.method == "task_arithmetic" and e.meta == {"weight": 0.7}
    assert e.config["models"] == [{"model": "s2", "parameters": {"weight": 0.7}}]


def test_merges_are_cached_by_content(tiny_pair):
    s1, s2 = tiny_pair
    entry = grid.merge("TA", "task_arithmetic", s1, [s2], model_params={"weight": 0.5})
    out = grid.materialize(entry)
    assert out.is_relative_to(paths.cache_dir())
    stamp = (out / "l2s_provenance.json").stat().st_mtime_ns
    again = grid.materialize(grid.merge("TA again", "task_arithmetic", s1, [s2], model_params={"weight": 0.5}))
    assert again == out and (out / "l2s_provenance.json").stat().st_mtime_ns == stamp
    other = grid.materialize(grid.merge("TA", "task_arithmetic", s1, [s2], model_params={"weight": 0.6}))
    assert other != out
    prov = json.loads((out / "l2s_provenance.json").read_text())
    assert prov["method"]["name"] == "task_arithmetic" and prov["inputs"][1]["parameters"] == {"weight": 0.5}


def test_merge_cache_tells_devices_apart(tiny_pair, tmp_path, monkeypatch):
    """A CUDA merge of a config never reuses the CPU merge of it (nor the other way); the GPU index does not
    matter. The driver is stubbed: what is tested is which folder materialize looks in."""
    s1, s2 = tiny_pair
    entry = grid.merge("TA", "task_arithmetic", s1, [s2], model_params={"weight": 0.5})
    assert grid.merge_key(entry.config, "cpu") == grid.merge_key(entry.config)
    assert grid.merge_key(entry.config, "cuda") != grid.merge_key(entry.config, "cpu")
    assert grid.merge_key(entry.config, "cuda:1") == grid.merge_key(entry.config, "cuda")
    made = []

    def fake_merge(config, out, device, overwrite, progress):
        made.append(device)
        out.mkdir(parents=True)
        (out / "l2s_provenance.json").write_text("{}")
        return out

    monkeypatch.setattr("l2s_lib.merge.driver.merge", fake_merge)
    cpu = grid.materialize(entry, device="cpu", cache_root=tmp_path)
    gpu = grid.materialize(entry, device="cuda", cache_root=tmp_path)
    assert cpu != gpu and made == ["cpu", "cuda"]
    assert grid.materialize(entry, device="cuda:0", cache_root=tmp_path) == gpu and len(made) == 2


@pytest.mark.slow
def test_grid_evaluates_models_and_merges(tiny_pair, tmp_path):
    s1, s2 = tiny_pair
    bench = tmp_path / "b.jsonl"
    bench.write_text("".join(json.dumps({"idx": i, "problem": f"{i}+1", "answer": str(i + 1), "level": 1 + i % 2}) + "\n"
                             for i in range(4)))
    from l2s_lib.eval.benchmarks import benchmark_from_file

    b = benchmark_from_file(bench, like="math500")
    entries = [grid.model("S1", s1, "system1"), grid.model("S2", s2, "system2"),
               grid.merge("TA", "task_arithmetic", s1, [s2], model_params={"weight": 0.7})]
    res = grid.evaluate(entries, [b], max_new_tokens=4, prompt="qwen25-math-cot", progress=False)
    top = res.summary[res.summary.level == "all"]
    assert list(top["model"]) == ["S1", "S2", "TA"]
    assert list(top["role"]) == ["system1", "system2", "merge"]
    assert top.set_index("model").loc["TA", "weight"] == 0.7
    assert set(res.records["model"]) == {"S1", "S2", "TA"}
    parallel = grid.evaluate(entries, [b], max_new_tokens=4, prompt="qwen25-math-cot", progress=False, workers=2)
    pd.testing.assert_frame_equal(parallel.summary, res.summary)
    pd.testing.assert_frame_equal(parallel.records, res.records)
    with pytest.raises(ValueError, match="unique"):
        grid.evaluate([entries[0], entries[0]], [b])
