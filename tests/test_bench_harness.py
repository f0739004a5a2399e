"""The benchmark harness (bench/harness.py): its timing loop, its per-case subprocess runner and
its results files."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402


def _sleep_10ms():
    time.sleep(0.01)
    return 0


def test_time_calls_measures_a_sleep_and_leaves_out_the_first_call():
    calls = []

    def call():
        calls.append(None)
        time.sleep(0.2 if len(calls) == 1 else 0.01)  # the first call "compiles"
        return len(calls)

    t = harness.time_calls(call, warmup=2, repeats=5, inner=2)
    assert len(calls) == 1 + 2 + 5 * 2
    assert t.calls == 10 and len(t.per_call_s) == 5
    # Lower bounds only, and the order of the two: a loaded machine stretches sleeps.
    assert t.first_s >= 0.2
    assert 0.01 <= t.median_s < t.first_s, t
    assert min(t.per_call_s) <= t.median_s <= max(t.per_call_s)
    assert 0 <= t.spread < 2
    assert t.per_s(32) == pytest.approx(32 / t.median_s)
    d = t.as_dict()
    assert d["repeats"] == 5 and d["min_s"] <= d["median_s"] <= d["max_s"]


def test_time_calls_repeats_until_min_seconds():
    t = harness.time_calls(_sleep_10ms, warmup=0, repeats=1, min_seconds=0.2)
    assert len(t.per_call_s) >= 10


@pytest.mark.slow  # three fresh Pythons
def test_run_in_child_reports_the_peak_memory_of_its_own_case():
    small = harness.run_in_child(_allocate, mb=0)
    big = harness.run_in_child(_allocate, mb=200)
    assert small["sum"] == 0 and big["sum"] == 200 * 2**20
    assert big["pid"] != os.getpid()
    assert big["peak_rss_mb"] - small["peak_rss_mb"] > 150, (small, big)
    # Per case: a small case after a big one is small again.
    again = harness.run_in_child(_allocate, mb=0)
    assert again["peak_rss_mb"] < big["peak_rss_mb"] - 150


def _allocate(mb: int) -> dict:
    """Touch ``mb`` MiB of memory (a module-level function, as a benchmark's case is)."""
    import numpy as np

    block = np.ones(mb * 2**20, np.uint8)
    return {"sum": int(block.sum()), "pid": os.getpid()}


def test_run_in_child_raises_when_the_case_fails():
    with pytest.raises(RuntimeError, match="exited with"):
        harness.run_in_child(_allocate, mb=-1)


def test_write_results_writes_markdown_and_json_together(tmp_path):
    md = tmp_path / "sub" / "table.md"
    path = harness.write_results(str(md), "# T\n\n| a |\n|---|\n| 1 |\n", {"rows": [1.5]})
    assert path == str(tmp_path / "sub" / "table.json")
    data = json.loads(Path(path).read_text())
    assert data["results"] == {"rows": [1.5]}
    meta = data["meta"]
    for key in ("date", "commit", "cpu", "cores", "versions", "command"):
        assert meta[key], key
    assert meta["versions"]["jax"] and meta["versions"]["flax"]
    text = md.read_text()
    assert text.startswith("# T\n\n| a |") and meta["commit"][:12] in text and "table.json" in text
    assert sorted(os.listdir(md.parent)) == ["table.json", "table.md"]  # no temporary left


def test_write_results_leaves_the_old_pair_when_the_data_is_not_json(tmp_path):
    md = tmp_path / "table.md"
    harness.write_results(str(md), "old", {"x": 1})
    with pytest.raises(TypeError):
        harness.write_results(str(md), "new", {"x": object()})
    assert md.read_text().startswith("old")
    assert json.loads((tmp_path / "table.json").read_text())["results"] == {"x": 1}


def test_out_path_keeps_quick_runs_away_from_the_committed_tables(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_QUICK_DIR", str(tmp_path))
    ap = harness.parser("doc")
    assert harness.out_path(ap.parse_args(["--quick"]), "x") == str(tmp_path / "x.md")
    assert harness.out_path(ap.parse_args([]), "x") == os.path.join(harness.RESULTS, "x.md")
    assert harness.out_path(ap.parse_args(["--quick", "--out", "y.md"]), "x") == "y.md"


def test_finished_and_train_info(tmp_path):
    assert not harness.finished(str(tmp_path))
    rows = [{"split": "train", "step": 1, "time": 2.0}, {"split": "eval", "step": 2, "time": 3.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert harness.finished(str(tmp_path))
    assert harness.train_info(str(tmp_path)) == (2, 3.5)


def test_eval_table_redo_measures_named_rows_again_and_keeps_the_rest(tmp_path):
    import eval_table

    class Recorder(harness.Runs):
        def train(self, name, *args, **kwargs):
            trained.append(name)

        def evaluate(self, name, *args, **kwargs):
            evaluated.append(name)

    where = Recorder(str(tmp_path / "runs"), str(tmp_path / "images"))
    # Every MNIST row is in the previous table: nothing runs, unless --redo names it.
    previous = {("MNIST", row[0]): "| MNIST | ... |" for row in eval_table.ROWS}
    trained, evaluated = [], []
    eval_table.run_missing(where, ["mnist"], set(), previous)
    assert (trained, evaluated) == ([], [])
    eval_table.run_missing(where, ["mnist"], {"diff_mnist_ddpm_1000"}, previous, ["diff_*"])
    assert set(trained) == {"diffusion_mnist"}
    assert "diff_mnist_ddpm_1000" not in evaluated  # --skip still wins
    assert sorted(evaluated) == sorted(
        row[1].format(ds="mnist")
        for row in eval_table.ROWS
        if row[1].startswith("diff_") and row[1] != "diff_{ds}_ddpm_1000"
    )


def _budget_recorder(tmp_path, fail=(), delay=0.0):
    """A harness.Runs that records training (start and end) and evals instead of running them;
    the runs named in ``fail`` raise."""
    import threading
    import time

    events, lock = [], threading.Lock()

    class Recorder(harness.Runs):
        def train(self, name, *args, **kwargs):
            with lock:
                events.append(("start", name))
            time.sleep(delay if name.startswith(("vqgan", "vqvae")) else 0.0)
            if name in fail:
                raise RuntimeError(f"{name} broke")
            with lock:
                events.append(("end", name))

        def sample_grid(self, *args, **kwargs):
            pass

        def evaluate(self, name, *args, **kwargs):
            with lock:
                events.append(("eval", name))

    return Recorder(str(tmp_path / "runs"), str(tmp_path / "images")), events


def test_eval_table_trains_side_by_side_each_prior_after_its_tokenizer(tmp_path):
    import eval_table

    table = eval_table.TABLES["budget30"]
    where, events = _budget_recorder(tmp_path, delay=0.3)
    failed = eval_table.run_missing(where, ["mnist"], set(), {}, table=table, jobs=8)
    assert failed == []
    order = {event: i for i, event in enumerate(events)}
    for prior, tokenizer in table.first_stage.items():
        # The tokenizer sleeps; with 8 workers the prior is started at once and must wait.
        assert order[("start", f"{prior}_mnist")] > order[("end", f"{tokenizer}_mnist")]
    started = [name for kind, name in events if kind == "start"]
    assert len(started) == len(set(started))  # a tokenizer two priors share trains once
    assert set(started) == {f"{run}_mnist" for run in table.train}
    last_train = max(i for i, (kind, _) in enumerate(events) if kind != "eval")
    assert all(kind == "eval" for kind, _ in events[last_train + 1 :])


def test_eval_table_a_broken_run_costs_only_the_rows_that_need_it(tmp_path):
    import eval_table

    table = eval_table.TABLES["budget30"]
    where, events = _budget_recorder(tmp_path, fail={"vqgan_mnist"})
    failed = eval_table.run_missing(where, ["mnist"], set(), {}, table=table, jobs=4)
    evaluated = {name for kind, name in events if kind == "eval"}
    needs_vqgan = {row[1].format(ds="mnist") for row in table.rows if "vqgan" in row[2]}
    assert needs_vqgan and not evaluated & needs_vqgan
    assert evaluated == {row[1].format(ds="mnist") for row in table.rows} - needs_vqgan
    assert [line.split(":")[0] for line in failed] == [
        "train vqgan_mnist",
        "train gpt_mnist",
        "train maskgit_mnist",
    ]


def test_eval_table_marks_the_wall_time_of_a_run_trained_elsewhere(tmp_path):
    import eval_table

    where = harness.Runs(str(tmp_path / "runs"), str(tmp_path / "images"))
    table = eval_table.TABLES["budget30"]
    for run, device in (("vae_mnist", None), ("dcgan_mnist", "NVIDIA H200")):
        os.makedirs(where.workdir(run))
        rows = [{"split": "eval", "step": 100, "time": 61.4}]
        with open(os.path.join(where.workdir(run), "metrics.jsonl"), "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
        if device:
            with open(os.path.join(where.workdir(run), harness.TRAINED_ON), "w") as f:
                f.write(device + "\n")
    os.makedirs(os.path.dirname(where.eval_json("x")))
    for stem in ("vae_mnist", "dcgan_mnist", "wgan_gp_mnist"):
        out = {"metrics": {"fd": 1.0, "kid": 0.1}, "num_samples": 10, "step": 2900}
        # Only this run's eval came back from the machine it trained on, not its workdir.
        out.update(workdir=f"/elsewhere/runs/budget30/{stem}", device="NVIDIA H200")
        with open(where.eval_json(stem), "w") as f:
            json.dump(out, f)
    text, _, _ = eval_table.build(where, ["mnist"], table=table)
    cells = {line.split("|")[2].strip(): line.split("|")[11:13] for line in text.splitlines()}
    walls = {label: wall.strip() for label, (_, wall) in cells.items()}
    assert walls["VAE (budget30)"] == "61 s"
    assert walls["DCGAN (budget30)"] == "61 s (NVIDIA H200)"
    # 2,900 steps at the WGAN-GP recipe's 3.3 steps/s on the README's CPU.
    assert cells["WGAN-GP (budget30)"][0].strip() == "2900"
    assert walls["WGAN-GP (budget30)"] == "~879 s est. (trained on NVIDIA H200)"
