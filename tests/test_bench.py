"""Benchmark: presets, t-interval aggregation, resumable grid runner on a tiny generator, 2-process == 1-process."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

import sgilo.bench.run as bench_run
from conftest import make_tiny_generator
from sgilo.bench.presets import SOLVER_PRESETS, SOLVERS, TASK_GROUPS, expand_tasks, preset_params
from sgilo.bench.run import BenchConfig, measure_images, run_bench
from sgilo.bench.summary import sgilo_verdict, summarize, t_interval
from sgilo.bench.tasks import make_operator, task_params
from sgilo.generator import fit_gaussianized_w, save_generator

ROOT = Path(__file__).resolve().parents[1]


def make_zip(path: Path, res: int = 32, n_train: int = 3, n_test: int = 3) -> Path:
    """Dataset zip in the StyleGAN layout (dataset.json with splits) of smooth random colour images."""
    rng = np.random.default_rng(0)
    entries = []
    with zipfile.ZipFile(path, "w") as z:
        for i in range(n_train + n_test):
            split = "train" if i < n_train else "test"
            img = Image.fromarray(rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)).resize((res, res), Image.BILINEAR)
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            z.writestr(f"{split}/{i:03d}.png", buf.getvalue())
            entries.append({"file": f"{split}/{i:03d}.png", "split": split})
        z.writestr("dataset.json", json.dumps({"images": entries}))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    G = make_tiny_generator(32)
    fit = fit_gaussianized_w(G.mapping, 2000, generator=torch.Generator().manual_seed(0))
    return root, make_zip(root / "data.zip"), (G, fit, {})


def test_presets_resolve_to_operators():
    assert len(TASK_GROUPS["main"]) == 12 and len(TASK_GROUPS["csgm-protocol"]) == 9
    assert expand_tasks("sparse,inpaint-random-3") == TASK_GROUPS["sparse"]
    assert preset_params("inpaint-box", (3, 64, 64))["box"] == (16, 16, 48, 48)       # centre 32×32 of 64×64
    for m in (20, 10000):                                                            # CSGM protocol, n = 12288
        p = task_params("cs-gaussian", (3, 64, 64), 0, **preset_params(f"csgm-m{m}", (3, 64, 64)))
        assert p["m"] == m and p["sigma"] == 0.01
    assert task_params("denoise", (3, 64, 64), 0, **preset_params("denoise-0.2", (3, 64, 64)))["sigma"] == 0.2
    with pytest.raises(ValueError, match="m = 5000"):
        preset_params("csgm-m5000", (3, 32, 32))
    with pytest.raises(ValueError, match="unknown task preset"):
        expand_tasks("inpaint-nothing")


def test_solver_presets_are_complete():
    from sgilo.app.presets import PRESETS
    for name, preset in SOLVER_PRESETS.items():
        assert all(preset.config(s) is not None for s in SOLVERS) and preset.batch >= 1 and preset.n_images >= 1, name
    tuned, default = SOLVER_PRESETS["tuned"].configs, SOLVER_PRESETS["default"].configs
    assert all(tuned[s] == PRESETS["utkface64"][s] for s in ("csgm", "ilo", "sgilo"))
    assert tuned["sgilo"].chains * sum(tuned["sgilo"].steps) > default["sgilo"].chains * sum(default["sgilo"].steps)


def test_t_interval_and_verdict():
    v = [1.0, 2.0, 4.0, 7.0]
    s = t_interval(v + [float("inf")])
    half = stats.t.ppf(0.975, 3) * np.std(v, ddof=1) / 2
    assert s["n"] == 4 and s["mean"] == pytest.approx(3.5) and s["ci95"] == pytest.approx(half)
    assert t_interval([2.0]) == {"mean": 2.0, "ci95": None, "n": 1}
    recs = [{"task": "t", "solver": sol, "seed": 0, "image": i, "seconds": 1.0,
             "metrics": {"psnr": base + 0.1 * i}} for sol, base in (("csgm", 10.0), ("sgilo", 20.0)) for i in range(3)]
    summary = summarize(recs)
    assert summary["t"]["sgilo"]["psnr"]["mean"] == pytest.approx(20.1) and summary["t"]["csgm"]["seconds"]["n"] == 3
    assert sgilo_verdict(summary["t"]) == "yes (intervals disjoint)"
    summary["t"]["csgm"]["psnr"]["mean"] = 25.0
    assert sgilo_verdict(summary["t"]) == "no"


def test_measurements_do_not_depend_on_batching():
    op = make_operator("denoise", (3, 8, 8), 0, sigma=0.1)
    x = torch.rand(4, 3, 8, 8)
    whole = measure_images(op, x, 3, "denoise-0.2", [0, 1, 2, 3])
    parts = torch.cat([measure_images(op, x[:1], 3, "denoise-0.2", [0]), measure_images(op, x[1:], 3, "denoise-0.2",
                                                                                         [1, 2, 3])])
    assert torch.equal(whole, parts) and not torch.equal(whole[0] - x[0], whole[1] - x[1])


@pytest.mark.slow  # > 3 s on 2 cores: make test-slow
def test_run_is_batched_resumable_and_summarised(tiny, monkeypatch):
    root, data, models = tiny
    out = root / "run"
    cfg = BenchConfig(data=str(data), out=str(out), tasks=("inpaint-random-10",), solvers=("csgm", "lasso-dct"),
                      n_images=3, preset="smoke", batch=2, n_show=2, progress=False)
    calls = []
    real = bench_run.run_solver
    monkeypatch.setattr(bench_run, "run_solver",
                        lambda name, y, *a: calls.append((name, y.shape[0])) or real(name, y, *a))
    recs = run_bench(cfg, "cpu", models=models)
    assert sorted(calls) == [("csgm", 1), ("csgm", 2), ("lasso-dct", 1), ("lasso-dct", 2)]   # chunks of 2 images
    assert len(recs) == 6 and len((out / "results.jsonl").read_text().splitlines()) == 6
    rec = recs[0]
    assert {"psnr", "ssim", "mse", "residual"} <= set(rec["metrics"]) and rec["seconds"] > 0
    assert rec["params"]["observed"] == 0.1 and rec["n_measurements"] == 3 * 32 * 32
    assert all(r["lam"] in (1e-3, 1e-2) for r in recs if r["solver"] == "lasso-dct")          # smoke λ grid
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inpaint-random-10"]["csgm"]["psnr"]["n"] == 3
    assert "| inpaint-random-10 | 3 |" in (out / "summary.md").read_text()
    assert (out / "figures" / "sheet_inpaint-random-10.png").is_file()
    # Restart: nothing left to do.
    calls.clear()
    assert run_bench(cfg, "cpu", models=models) == recs and calls == []
    # Lose one cell (as after a kill): only its chunk is re-run, and the result is identical.
    lines = (out / "results.jsonl").read_text().splitlines()
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    again = run_bench(cfg, "cpu", models=models)
    assert calls == [("lasso-dct", 1)]
    assert [r["metrics"] for r in again] == [r["metrics"] for r in recs]
    with pytest.raises(ValueError, match="different preset"):
        run_bench(BenchConfig(**{**cfg.__dict__, "preset": "quick"}), "cpu", models=models)
    # Another task into the same folder: the summary covers both (it used to keep only the last run's tasks).
    run_bench(BenchConfig(**{**cfg.__dict__, "tasks": ("denoise-0.2",)}), "cpu", models=models)
    summary = json.loads((out / "summary.json").read_text())
    assert {"inpaint-random-10", "denoise-0.2"} <= set(summary)
    assert "| inpaint-random-10 | 3 |" in (out / "summary.md").read_text()


def write_calibration(path: Path, task: str, scales: dict[str, float]) -> Path:
    """A minimal interval-calibration file (format of `sgilo.metrics.conformal`) with one task."""
    from sgilo.metrics.conformal import FORMAT, VERSION
    levels = {q: {"scale": lam} for q, lam in scales.items()}
    path.write_text(json.dumps({"format": FORMAT, "version": VERSION, "split": "train", "n_images": 20,
                                "config": {"chains": 2, "steps": [2, 2]}, "tasks": {task: {"levels": levels}}}))
    return path


def test_sgilo_cells_carry_sampler_metrics(tiny, monkeypatch):
    from sgilo.metrics.conformal import load_calibration
    root, data, models = tiny
    cal = write_calibration(root / "cal.json", "inpaint-box", {"0.5": 2.0, "0.9": 1.5})
    monkeypatch.setattr(bench_run, "load_calibration", lambda name: load_calibration(cal))
    cfg = BenchConfig(data=str(data), out=str(root / "sgilo"), tasks=("inpaint-box",), solvers=("sgilo",),
                      n_images=2, preset="smoke", progress=False)
    recs = run_bench(cfg, "cpu", models=models)
    m = recs[0]["metrics"]
    assert {"coverage50", "coverage90", "diversity", "psnr_sample", "psnr_best", "ssim_sample", "width50",
            "width90", "coverage90_cal", "width90_cal"} <= set(m)
    # x̄ ± 1.5·half contains x̄ ± half: calibrated coverage ≥ raw, width scaled by exactly λ.
    assert m["scale90"] == 1.5 and m["scale50"] == 2.0
    assert m["coverage90_cal"] >= m["coverage90"] and m["width90_cal"] == pytest.approx(1.5 * m["width90"])
    assert m["width90"] > m["width50"] > 0
    # SGILO-family diagnostics per record: h_1's move in round k = 1 and the modes among the 2 chains.
    assert [h["k"] for h in recs[0]["h_move"]] == [1] and recs[0]["h_move"][0]["mean"] >= 0
    assert recs[0]["modes"] in (1, 2)
    run_info = json.loads((root / "sgilo" / "config.json").read_text())["interval_calibration"]
    assert run_info["tasks"] == ["inpaint-box"]
    summary = json.loads((root / "sgilo" / "summary.json").read_text())["inpaint-box"]["sgilo"]
    assert summary["h_move_k1"]["n"] == 2 and summary["coverage90_cal"]["n"] == 2 and "modes" in summary
    md = (root / "sgilo" / "summary.md").read_text()
    assert "coverage90_cal" in md and "width90" in md and "| inpaint-box | k=1 |" in md
    assert (root / "sgilo" / "figures" / "uncertainty_inpaint-box_sgilo.png").is_file()


def test_chain_diagnostics_split_rows_per_image():
    """Rows are chain-major (row c·B + b): image b's h_move is the mean over c of rows[c·B + b]."""
    from sgilo.bench.run import chain_diagnostics
    diag = {"h_move": [{"k": 1, "mean": 2.5, "rows": [1.0, 2.0, 3.0, 4.0], "start": 0.0}], "modes": [1, 2]}
    out = chain_diagnostics(diag, K=2, B=2)
    assert out == [{"h_move": [{"k": 1, "mean": 2.0}], "modes": 1}, {"h_move": [{"k": 1, "mean": 3.0}], "modes": 2}]
    assert chain_diagnostics({}, 2, 2) == [{}, {}]


def _strip_seconds(summary: dict) -> dict:
    return {t: {s: {m: v for m, v in ms.items() if m != "seconds"} for s, ms in row.items()}
            for t, row in summary.items()}


@pytest.mark.slow  # subprocesses / repeated bench runs: make test-slow
def test_two_processes_give_the_one_process_summary(tiny):
    root, data, (G, fit, _) = tiny
    model = root / "tiny_generator"
    save_generator(model, G, gaussian_fit=fit)
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    assert torchrun, "torchrun not found next to the Python interpreter"
    args = ["-m", "sgilo", "bench", "--data", str(data), "--tasks", "inpaint-random-10", "--solvers", "csgm",
            "--preset", "smoke", "--n-images", "2", "--batch", "1", "--model", str(model), "--prior", "none",
            "--device", "cpu", "--no-figures"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = BenchConfig(data=str(data), out=str(root / "one"), tasks=("inpaint-random-10",), solvers=("csgm",),
                      n_images=2, preset="smoke", model=str(model), priors=("none",), batch=1, figures=False,
                      progress=False)
    run_bench(one, "cpu")                                         # 1 process, in-process (same library path)
    two = subprocess.run([torchrun, "--nproc-per-node", "2", "--master-port", "29517", *args, "--out",
                          str(root / "two")], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert two.returncode == 0, two.stderr[-2000:]
    s1 = json.loads((root / "one" / "summary.json").read_text())
    s2 = json.loads((root / "two" / "summary.json").read_text())
    assert s1["inpaint-random-10"]["csgm"]["psnr"]["n"] == 2
    assert _strip_seconds(s1) == _strip_seconds(s2)
    assert not list((root / "two" / "parts").glob("*.jsonl"))                      # merged into results.jsonl


@pytest.mark.slow  # subprocesses / repeated bench runs: make test-slow
def test_results_do_not_depend_on_batch(tiny):
    """A seed per sample: every image's metrics are identical whether the images run one by one or two at a time, and
    a folder can be resumed with another --batch."""
    root, data, models = tiny
    common = dict(data=str(data), tasks=("inpaint-random-10",), solvers=("csgm", "sgilo"), n_images=3,
                  preset="smoke", figures=False, progress=False)
    one = run_bench(BenchConfig(out=str(root / "b1"), batch=1, **common), "cpu", models=models)
    two = run_bench(BenchConfig(out=str(root / "b2"), batch=2, **common), "cpu", models=models)
    key = (lambda r: (r["solver"], r["image"]))
    m1, m2 = ({key(r): r["metrics"] for r in recs} for recs in (one, two))
    assert len(m1) == 6 and m1.keys() == m2.keys()
    for k in m1:
        assert m1[k] == pytest.approx(m2[k], rel=1e-5, abs=1e-6), k
    again = run_bench(BenchConfig(out=str(root / "b2"), batch=3, **common), "cpu", models=models)   # resume, new batch
    assert [r["metrics"] for r in again] == [r["metrics"] for r in two]


# ----------------------------------------------------------------------------
# Tuning harness: train/ images only, one record per grid point, resumed points skipped, bad fields refused.


def test_tune_grid_on_train_split_resumes(tiny, monkeypatch):
    from sgilo.bench import tune as tune_mod
    from sgilo.utils import datasets as data_mod

    root, data, models = tiny
    splits = []
    real = data_mod.load_image_set
    monkeypatch.setattr(data_mod, "load_image_set", lambda *a, **k: splits.append(a[2]) or real(*a, **k))
    grid = {"chains": [2], "steps": [[2, 2]], "eta": [1e-5, 3e-5]}
    out = root / "tune"
    recs = tune_mod.tune(str(data), "inpaint-random", {"observed": 0.2}, "sgilo", grid, out, n_images=2,
                         preset="smoke", models=models, progress=False)
    assert splits == ["train"] and len(recs) == 2
    assert recs[0]["point"] == {"chains": 2, "eta": 1e-5, "steps": [2, 2]} and recs[0]["split"] == "train"
    assert {"psnr", "coverage90", "diversity"} <= set(recs[0]["metrics"]) and len(recs[0]["per_image"]) == 2
    assert recs[0]["metrics"] != recs[1]["metrics"]
    again = tune_mod.tune(str(data), "inpaint-random", {"observed": 0.2}, "sgilo", grid, out, n_images=2,
                          preset="smoke", models=models, progress=False)
    assert again == recs and len((out / "tune.jsonl").read_text().splitlines()) == 2
    assert "| point |" in (out / "tune_table.md").read_text()
    with pytest.raises(ValueError, match="unknown SGILOConfig field"):
        tune_mod.tune(str(data), "inpaint-random", {"observed": 0.2}, "sgilo", {"etaa": [1]}, out, preset="smoke",
                      models=models)


def test_summary_reports_ilo_minus_csgm_paired_for_the_three_estimates():
    """ILO contains CSGM (its round 0): the summary gives ILO − CSGM paired over the same faces for mean-of-K,
    best-of-K and single outputs."""
    from sgilo.bench.summary import markdown, summarize

    def rec(solver, image, psnr):
        return {"task": "inpaint-random-3", "solver": solver, "seed": 0, "image": image, "seconds": 1.0,
                "params": {}, "metrics": {"psnr": psnr, "psnr_best": psnr + 1, "psnr_sample": psnr - 1}}
    csgm = [20.0, 18.0, 22.0, 19.0]
    ilo = [20.5, 18.4, 22.6, 19.5]                                   # +0.5, +0.4, +0.6, +0.5: mean 0.5
    records = [rec("csgm", i, p) for i, p in enumerate(csgm)] + [rec("ilo", i, p) for i, p in enumerate(ilo)]
    s = summarize(records)
    g = s["inpaint-random-3"]["ilo"]
    for m in ("psnr", "psnr_best", "psnr_sample"):
        assert g[f"{m}_gain_over_csgm"]["mean"] == pytest.approx(0.5)
        assert g[f"{m}_gain_over_csgm"]["n"] == 4
    half = 3.182446 * np.std([0.5, 0.4, 0.6, 0.5], ddof=1) / 2       # t_{0.975, 3} s / sqrt(4)
    assert g["psnr_gain_over_csgm"]["ci95"] == pytest.approx(half, rel=1e-4)
    md = markdown(s, records, ("csgm", "ilo"))
    assert "### ILO − CSGM" in md and "| inpaint-random-3 | 4 | 0.50 ±" in md


# ----------------------------------------------------------------------------
# Resuming a folder in which one solver is complete: both ranks get work. Sharding the unit list before dropping the
# finished units gave rank 0 every finished unit (nothing to run) and rank 1 all the rest.


def test_pending_units_are_sharded_after_dropping_finished_ones():
    from sgilo.bench.run import pending_units

    units = [("t", 0, start, start + 8, solver) for start in range(0, 32, 8) for solver in ("a", "b")]
    done = {("t", "a", 0, i) for i in range(32)} | {("t", "b", 0, i) for i in range(4)}   # b's first unit half done
    shares = [pending_units(units, done, r, 2) for r in range(2)]
    assert [len(s) for s in shares] == [2, 2]
    assert sorted(shares[0] + shares[1]) == [u for u in sorted(units) if u[4] == "b"]
    assert pending_units(units, done | {("t", "b", 0, i) for i in range(32)}, 0, 2) == []
