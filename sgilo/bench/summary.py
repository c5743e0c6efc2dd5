"""Aggregation of the SGILO benchmark (Daras et al., ICML 2022): per task, solver and metric the mean over all
(image, seed) cells with a 95% Student-t confidence interval, a markdown table, and the figures (comparison sheets,
uncertainty maps, PSNR and MSE against the number of measurements as in Bora et al., ICML 2017, Fig. 3).

    ci95 = t_{0.975, n−1} · s / √n      (half-width; s the sample std with Bessel's correction; None when n < 2)

Cells from different seeds of the same image are pooled as if independent; non-finite values (e.g. PSNR = inf for an
exact reconstruction) are left out and `n` counts the finite ones.

Every solver sees the same images and measurements, so SGILO's PSNR is also compared *paired*: for each other solver s
the differences d = PSNR_sgilo − PSNR_s of the cells matched on (image, seed) get their own t-interval
(``summary[task]["sgilo"]["psnr_gain_over_<s>"]``), which removes the image-to-image spread shared by all solvers.
The other solvers include SGILO's ablation variants (sgilo-gauss, sgilo-map, sgilo-z), so SGILO − variant is the
paired contribution of the part the variant removes.

Generative solvers are ranked by ``psnr``, the PSNR of the mean of their K outputs; the table of estimates shows it
beside ``psnr_best`` (the output with the lowest data term) and ``psnr_sample`` (mean PSNR of single outputs), so the
gain from averaging K outputs is visible for every solver. The solver section states what each solver optimises under
which constraints and its range ceiling: its PSNR on the task ``full`` (every pixel observed) when that task was run.

Posterior samplers get a table of interval coverage, raw and calibrated (``_cal``, with the bundled interval
calibration; `sgilo.metrics.conformal`), beside the mean interval width (sharpness: coverage bought with wide intervals
shows there), diversity, R̂ and the number of distinct modes among the chains. SGILO-family solvers also get the mean
relative move of h_k per round, ``h_move_k{k}`` = ‖h_k − head_k(z)‖ / ‖head_k(z)‖ at the end of round k (issue 16:
a prior on h_k can only matter where h_k moves).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np

from sgilo.checkpoints import atomic_write_text
from sgilo.metrics.posterior import student_t_quantile

CI_METHOD = "Student-t 95% confidence interval of the mean (half-width), over all (image, seed) cells"
MAIN_METRICS = ("psnr", "ssim", "residual")
ESTIMATES = (("psnr", "mean of K"), ("psnr_best", "best of K"), ("psnr_sample", "single"))
CEILING_TASK = "full"
SAMPLER_METRICS = ("coverage50", "coverage50_cal", "width50", "width50_cal", "coverage90", "coverage90_cal", "width90",
                   "width90_cal", "scale50", "scale90", "diversity", "rhat", "modes")


# ----------------------------------------------------------------------------
# t_{0.975, df}, cached: `student_t_quantile` integrates numerically (≈ 0.3 s a call) and a summary asks for a few df.


@functools.lru_cache(maxsize=None)
def t975(df: int) -> float:
    return float(student_t_quantile(0.975, df))


# ----------------------------------------------------------------------------
# Mean, t-interval half-width and count of the finite values.


def t_interval(values: list[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = int(v.size)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    ci = float(t975(n - 1) * v.std(ddof=1) / math.sqrt(n)) if n >= 2 else None
    return {"mean": float(v.mean()), "ci95": ci, "n": n}


# ----------------------------------------------------------------------------
# {task: {solver: {metric: {mean, ci95, n}}}} from result records (metrics, rhat and seconds per cell).


def summarize(records: list[dict], tasks: tuple[str, ...] | None = None,
              solvers: tuple[str, ...] | None = None) -> dict:
    tasks = tasks or tuple(dict.fromkeys(r["task"] for r in records))
    solvers = solvers or tuple(dict.fromkeys(r["solver"] for r in records))
    out: dict = {}
    for t in tasks:
        for s in solvers:
            cells = [r for r in records if r["task"] == t and r["solver"] == s]
            if not cells:
                continue
            values: dict[str, list[float]] = {}
            for r in cells:
                for k, v in {**r["metrics"], "seconds": r["seconds"], **h_move_values(r),
                             **{k: r[k] for k in ("rhat", "nfe", "modes") if r.get(k) is not None}}.items():
                    values.setdefault(k, []).append(v)
            out.setdefault(t, {})[s] = {k: t_interval(v) for k, v in values.items()}
        if "sgilo" in out.get(t, {}):
            out[t]["sgilo"].update(paired_gains(records, t, [s for s in out[t] if s != "sgilo"]))
        if "ilo" in out.get(t, {}) and "csgm" in out[t]:                   # ILO contains CSGM (its round 0)
            for m, _ in ESTIMATES:
                out[t]["ilo"].update(paired_gains(records, t, ["csgm"], ref="ilo", metric=m))
    return out


# ----------------------------------------------------------------------------
# {"h_move_k1": mean relative move of h_1 at the end of round 1, …} of one record (SGILO family; else {}).


def h_move_values(record: dict) -> dict[str, float]:
    return {f"h_move_k{m['k']}": m["mean"] for m in record.get("h_move") or [] if m.get("mean") is not None}


def h_move_rounds(summary: dict) -> list[str]:
    keys = {m for row in summary.values() for v in row.values() for m in v if m.startswith("h_move_k")}
    return sorted(keys, key=lambda m: int(m.removeprefix("h_move_k")))


# ----------------------------------------------------------------------------
# Paired PSNR differences SGILO − s over the (image, seed) cells both solvers finished.


def paired_gains(records: list[dict], task: str, others: list[str], ref: str = "sgilo",
                 metric: str = "psnr") -> dict:
    by = {(r["solver"], r["image"], r["seed"]): r["metrics"].get(metric) for r in records if r["task"] == task}
    out = {}
    for s in others:
        keys = [(i, sd) for (sv, i, sd) in by if sv == ref and (s, i, sd) in by]
        diffs = [by[(ref, i, sd)] - by[(s, i, sd)] for i, sd in keys
                 if by[(ref, i, sd)] is not None and by[(s, i, sd)] is not None]
        out[f"{metric}_gain_over_{s}"] = t_interval(diffs)
    return out


# ----------------------------------------------------------------------------
# "mean ± ci" for a table cell.


def fmt(stat: dict | None, digits: int = 2) -> str:
    if not stat or stat["mean"] is None:
        return "–"
    ci = "" if stat["ci95"] is None else f" ± {stat['ci95']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}{ci}"


# "mean ± ci" in 3 significant digits (small relative quantities such as h_move).


def fmt_g(stat: dict | None) -> str:
    if not stat or stat["mean"] is None:
        return "–"
    return f"{stat['mean']:.3g}" + ("" if stat["ci95"] is None else f" ± {stat['ci95']:.2g}")


# ----------------------------------------------------------------------------
# Does SGILO have the highest mean PSNR, and is its interval disjoint from every other solver's?


def sgilo_verdict(row: dict) -> str:
    if "sgilo" not in row or len(row) < 2 or "psnr" not in row["sgilo"]:
        return "–"
    me = row["sgilo"]["psnr"]
    others = [v["psnr"] for s, v in row.items() if s != "sgilo" and "psnr" in v and v["psnr"]["mean"] is not None]
    if me["mean"] is None or not others:
        return "–"
    if any(o["mean"] >= me["mean"] for o in others):
        return "no"
    lo = me["mean"] - (me["ci95"] or 0)
    disjoint = me["ci95"] is not None and all(o["ci95"] is not None and o["mean"] + o["ci95"] < lo for o in others)
    return "yes (intervals disjoint)" if disjoint else "yes, but intervals overlap"


# ----------------------------------------------------------------------------
# The markdown report: main PSNR/SSIM/residual table, sampler table, seconds, CSGM-protocol table.


def markdown(summary: dict, records: list[dict], solvers: tuple[str, ...], described: dict | None = None) -> str:
    lines = [f"Values: mean ± {CI_METHOD}.", ""]
    lines += solver_section(summary, solvers, described or {})
    lines += estimates_section(summary, solvers)
    for metric, digits in (("psnr", 2), ("ssim", 3), ("residual", 3), ("nfe", 0), ("seconds", 2)):
        head = f"| task | n | {' | '.join(solvers)} |" + (" SGILO best? |" if metric == "psnr" else "")
        lines += [f"### {metric}", "", head, "|" + "---|" * (len(solvers) + 2 + (metric == "psnr"))]
        for t, row in summary.items():
            n = max((v.get(metric, {}).get("n", 0) for v in row.values()), default=0)
            cells = [fmt(row.get(s, {}).get(metric), digits) for s in solvers]
            extra = f" {sgilo_verdict(row)} |" if metric == "psnr" else ""
            lines.append(f"| {t} | {n} | {' | '.join(cells)} |{extra}")
        lines.append("")
    others = [s for s in solvers if s != "sgilo"]
    if "sgilo" in solvers and others:
        lines += ["### SGILO − other solver, PSNR (dB), paired over the same images", "",
                  f"| task | n | {' | '.join(f'SGILO − {s}' for s in others)} |", "|" + "---|" * (len(others) + 2)]
        for t, row in summary.items():
            gains = [row.get("sgilo", {}).get(f"psnr_gain_over_{s}") for s in others]
            n = max((g["n"] for g in gains if g), default=0)
            lines.append(f"| {t} | {n} | {' | '.join(fmt(g) for g in gains)} |")
        lines.append("")
    lines += baseline_section(summary)
    lines += sampler_section(summary, solvers)
    lines += h_move_section(summary, solvers)
    curve = measurement_curve(summary, records)
    if curve:
        lines += ["### PSNR / per-pixel MSE against measurements m (CSGM protocol)", "",
                  f"| m | {' | '.join(f'{s} PSNR | {s} MSE' for s in solvers)} |",
                  "|" + "---|" * (2 * len(solvers) + 1)]
        for m, task in curve:
            row = summary[task]
            cells = [f"{fmt(row.get(s, {}).get('psnr'))} | {fmt(row.get(s, {}).get('mse'), 4)}" for s in solvers]
            lines.append(f"| {m} | {' | '.join(cells)} |")
        lines.append("")
    params = {r["task"]: r["params"] for r in records}
    lines += ["### Task parameters", ""] + [f"- `{t}`: {json.dumps(p)}" for t, p in params.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------
# ILO − CSGM, paired (ILO contains CSGM as its round 0).


def baseline_section(summary: dict) -> list[str]:
    """ILO − CSGM paired, for the three estimates: ILO's round 0 is CSGM, so at equal budget ILO should not lose."""
    rows = [(t, row["ilo"]) for t, row in summary.items() if "ilo" in row and "psnr_gain_over_csgm" in row["ilo"]]
    if not rows:
        return []
    lines = ["### ILO − CSGM, PSNR (dB), paired over the same images (ILO's round 0 is CSGM)", "",
             "| task | n | mean of K | best of K | single |", "|---|---|---|---|---|"]
    for t, v in rows:
        gains = [v.get(f"{m}_gain_over_csgm") for m, _ in ESTIMATES]
        lines.append(f"| {t} | {v['psnr_gain_over_csgm']['n']} | {' | '.join(fmt(g) for g in gains)} |")
    return lines + [""]


# ----------------------------------------------------------------------------
# Posterior samplers: coverage raw / calibrated beside the mean interval width, diversity, R̂, modes.


def sampler_section(summary: dict, solvers: tuple[str, ...]) -> list[str]:
    rows = [(t, s, row[s]) for t, row in summary.items() for s in solvers if "coverage90" in row.get(s, {})]
    if not rows:
        return []
    metrics = [m for m in SAMPLER_METRICS if any(m in v for _, _, v in rows)]
    return (["### Posterior samples: interval coverage (raw, calibrated `_cal`) and mean width", "",
             f"| task | solver | {' | '.join(metrics)} |", "|" + "---|" * (len(metrics) + 2)]
            + [f"| {t} | {s} | {' | '.join(fmt(v.get(m), 3) for m in metrics)} |" for t, s, v in rows] + [""])


# ----------------------------------------------------------------------------
# SGILO family: mean ‖h_k − head_k(z)‖ / ‖head_k(z)‖ at the end of each round k ≥ 1, per task × solver.


def h_move_section(summary: dict, solvers: tuple[str, ...]) -> list[str]:
    rounds = h_move_rounds(summary)
    cols = [s for s in solvers if any(m in row.get(s, {}) for row in summary.values() for m in rounds)]
    if not cols:
        return []
    lines = ["### How far h_k moves: ‖h_k − head_k(z)‖ / ‖head_k(z)‖ at the end of round k (mean over chains, images)",
             "", f"| task | round | {' | '.join(cols)} |", "|" + "---|" * (len(cols) + 2)]
    for t, row in summary.items():
        for m in rounds:
            if any(m in row.get(s, {}) for s in cols):
                cells = [fmt_g(row.get(s, {}).get(m)) for s in cols]
                lines.append(f"| {t} | k={m.removeprefix('h_move_k')} | {' | '.join(cells)} |")
    return lines + [""]


# ----------------------------------------------------------------------------
# What every solver optimises under which constraints, its NFE per image, and its range ceiling (task 'full').


def solver_section(summary: dict, solvers: tuple[str, ...], described: dict) -> list[str]:
    full = summary.get(CEILING_TASK, {})
    lines = ["### Solvers", "", "| solver | optimises (constraints) | NFE per image | PSNR, all pixels observed |",
             "|---|---|---|---|"]
    for s in solvers:
        nfe = [row[s]["nfe"]["mean"] for row in summary.values() if s in row and row[s].get("nfe", {}).get("mean")]
        nfe_text = "–" if not nfe else (f"{min(nfe):.0f}" if min(nfe) == max(nfe) else f"{min(nfe):.0f}–{max(nfe):.0f}")
        ceiling = fmt(full.get(s, {}).get("psnr")) if s in full else f"not run (task `{CEILING_TASK}`)"
        lines.append(f"| {s} | {described.get(s, '–')} | {nfe_text} | {ceiling} |")
    return lines + [""]


# ----------------------------------------------------------------------------
# PSNR of the three estimates of every generative solver (mean of K, best of K by data term, single output).


def estimates_section(summary: dict, solvers: tuple[str, ...]) -> list[str]:
    gen = [s for s in solvers if any("psnr_sample" in row.get(s, {}) for row in summary.values())]
    if not gen:
        return []
    lines = ["### PSNR of the three estimates (ranked by the mean of K)", "",
             f"| task | {' | '.join(f'{s} {label}' for s in gen for _, label in ESTIMATES)} |",
             "|" + "---|" * (1 + len(gen) * len(ESTIMATES))]
    for t, row in summary.items():
        cells = [fmt(row.get(s, {}).get(m)) for s in gen for m, _ in ESTIMATES]
        lines.append(f"| {t} | {' | '.join(cells)} |")
    return lines + [""]


# ----------------------------------------------------------------------------
# (m, task) pairs of the CSGM-protocol tasks present (csgm-m*), sorted by m.


def measurement_curve(summary: dict, records: list[dict]) -> list[tuple[int, str]]:
    ms = {r["task"]: r["n_measurements"] for r in records if r["task"].startswith("csgm-m")}
    return sorted((m, t) for t, m in ms.items() if t in summary)


# ----------------------------------------------------------------------------
# Figures: one comparison sheet per task, uncertainty maps for samplers, PSNR/MSE against m.


def write_figures(out: Path, summary: dict, records: list[dict], solvers: tuple[str, ...]) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    written = []
    img = (lambda a: np.transpose(a, (1, 2, 0)))                                     # [C, H, W] → [H, W, C]
    for task in summary:
        files = {s: sorted((out / "recons" / task).glob(f"{s}_s0_i*.npz"), key=lambda p: int(p.stem.split("_i")[-1]))
                 for s in solvers}
        ref = next((f for f in files.values() if f), None)
        if not ref:
            continue
        rows = len(ref)
        cols = ["truth", "measurement"] + [s for s in solvers if files[s]]
        fig, axes = plt.subplots(rows, len(cols), figsize=(1.6 * len(cols), 1.6 * rows), squeeze=False)
        for i, path in enumerate(ref):
            base = np.load(path)
            for j, c in enumerate(cols):
                ax = axes[i, j]
                ax.axis("off")
                src = base if c in ("truth", "measurement") else (np.load(files[c][i]) if i < len(files[c]) else None)
                if src is not None:
                    ax.imshow(img(src["x_hat" if c in solvers else c]))
                if i == 0:
                    ax.set_title(c, fontsize=8)
        fig.tight_layout()
        fig.savefig(fig_dir / f"sheet_{task}.png", dpi=100)
        plt.close(fig)
        written.append(f"sheet_{task}.png")
        written += uncertainty_figure(plt, fig_dir, task, files, img)
    curve = measurement_curve(summary, records)
    if len(curve) >= 2:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for s in solvers:
            pts = [(m, summary[t][s]) for m, t in curve if s in summary[t]]
            for ax, metric in zip(axes, ("psnr", "mse"), strict=True):
                xs = [m for m, v in pts if v[metric]["mean"] is not None]
                ys = [v[metric]["mean"] for m, v in pts if v[metric]["mean"] is not None]
                es = [v[metric]["ci95"] or 0 for m, v in pts if v[metric]["mean"] is not None]
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=s)
        for ax, label in zip(axes, ("PSNR (dB)", "per-pixel MSE"), strict=True):
            ax.set_xscale("log")
            ax.set_xlabel("measurements m")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[1].set_yscale("log")
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(fig_dir / "psnr_vs_measurements.png", dpi=100)
        plt.close(fig)
        written.append("psnr_vs_measurements.png")
    return written


# ----------------------------------------------------------------------------
# Uncertainty maps of every sampler: truth, mean, |error|, per-pixel std (channel mean), two samples.


def uncertainty_figure(plt, fig_dir: Path, task: str, files: dict, img) -> list[str]:
    written = []
    for s, paths in files.items():
        data = [np.load(p) for p in paths]
        data = [d for d in data if "std" in d]
        if not data:
            continue
        cols = ["truth", "mean", "|error|", "std", "sample 1", "sample 2"]
        fig, axes = plt.subplots(len(data), len(cols), figsize=(1.6 * len(cols), 1.6 * len(data)), squeeze=False)
        for i, d in enumerate(data):
            err = np.abs(d["x_hat"].astype(np.float64) - d["truth"].astype(np.float64)).mean(0) / 127.5
            std = d["std"].astype(np.float64).mean(0)
            vmax = max(float(err.max()), float(std.max()), 1e-6)
            panels = [img(d["truth"]), img(d["x_hat"]), err, std, img(d["samples"][0]), img(d["samples"][1])]
            for j, (c, p) in enumerate(zip(cols, panels, strict=True)):
                axes[i, j].imshow(p, cmap="magma" if p.ndim == 2 else None, vmin=0 if p.ndim == 2 else None,
                                  vmax=vmax if p.ndim == 2 else None)
                axes[i, j].axis("off")
                if i == 0:
                    axes[i, j].set_title(c, fontsize=8)
        fig.tight_layout()
        fig.savefig(fig_dir / f"uncertainty_{task}_{s}.png", dpi=100)
        plt.close(fig)
        written.append(f"uncertainty_{task}_{s}.png")
    return written


# ----------------------------------------------------------------------------
# Write summary.json, summary.md and the figures; returns the summary dict.


def write_summary(out: str | Path, records: list[dict], tasks: tuple[str, ...] | None = None,
                  solvers: tuple[str, ...] | None = None, figures: bool = True, described: dict | None = None) -> dict:
    out = Path(out)
    solvers = solvers or tuple(dict.fromkeys(r["solver"] for r in records))
    summary = summarize(records, tasks, solvers)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    figures = write_figures(out, summary, records, solvers) if figures else []
    md = markdown(summary, records, solvers, described)
    md += "\n### Figures\n\n" + "".join(f"- figures/{f}\n" for f in figures)
    atomic_write_text(out / "summary.md", md)
    return summary
