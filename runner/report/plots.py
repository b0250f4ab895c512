"""Report stage, plots: PNG files under the report directory (matplotlib, Agg backend).

Only plots with data are drawn; file names depend only on what is plotted, never on time.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.workloads import WORKLOADS  # noqa: E402
from runner.report.frame import MODEL_NAMES, key_series, options_label, slug  # noqa: E402

_SAVE = {"dpi": 100, "metadata": {"Software": None}}


def _fw(df: pd.DataFrame) -> pd.Series:
    opts = df["options"].map(options_label)
    return df["framework_label"] + opts.map(lambda s: f" {s}" if s else "") + \
        df["toolchain"].fillna("").map(lambda t: f" [{t}]" if t else "")


def _rate_err(g: pd.DataFrame):
    """Asymmetric error bars (95 % CI of the rate) for matplotlib; zero length where a result has none."""
    low = (g["samples_per_s"] - g["rate_low"]).clip(lower=0).fillna(0.0)
    high = (g["rate_high"] - g["samples_per_s"]).clip(lower=0).fillna(0.0)
    return [low.to_numpy(), high.to_numpy()]


def _save(fig, path: Path) -> None:
    fig.savefig(path, **_SAVE)
    plt.close(fig)


def plot_cnn_synthetic(df: pd.DataFrame, out_dir: Path) -> list:
    d = df[(df["workload"] == "cnn-synthetic") & (df["status"] == "ok") & df["samples_per_s"].notna()]
    plots = []
    for (machine, device, precision), g in d.groupby(["machine", "device", "precision"], sort=True):
        g = g.assign(fw=_fw(g))
        models = [m for m in MODEL_NAMES if m in set(g["model"])] + \
            sorted(m for m in set(g["model"].dropna()) if m not in MODEL_NAMES)
        fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.5), squeeze=False, layout="constrained")
        for ax, model in zip(axes[0], models):
            mg = g[g["model"] == model]
            for fw, fg in mg.groupby("fw", sort=True):
                fg = fg.sort_values("batch")
                # error bars: the 95 % CI of each rate (none for older results)
                ax.errorbar(fg["batch"], fg["samples_per_s"], yerr=_rate_err(fg), marker="o", capsize=3, label=fw)
            ax.set_title(MODEL_NAMES.get(model, model))
            ax.set_xlabel("batch size")
            ax.set_ylabel("images/s")
            ax.set_xscale("log", base=2)
            ax.legend(fontsize=7)
        fig.suptitle(f"Synthetic-data training throughput, {machine}, {device.upper()}, {precision}")
        name = f"cnn-synthetic-{slug(machine)}-{device}-{precision}.png"
        _save(fig, out_dir / name)
        plots.append((f"Images/s by batch size, {machine} {device.upper()} {precision}", name))
    return plots


def plot_train_time(df: pd.DataFrame, out_dir: Path) -> list:
    train = [w for w, spec in WORKLOADS.items() if spec["kind"] == "train"]
    d = df[df["workload"].isin(train) & (df["status"] == "ok") & df["train_time_s"].notna()]
    plots = []
    for machine, g in d.groupby("machine", sort=True):
        workloads = [w for w in train if w in set(g["workload"])]
        fig, axes = plt.subplots(len(workloads), 1, figsize=(8, 1.2 + 0.45 * len(g) + len(workloads)),
                                 squeeze=False, layout="constrained")
        for ax, wl in zip(axes[:, 0], workloads):
            wg = g[g["workload"] == wl].copy()
            wg["who"] = _fw(wg) + wg["dataset"].fillna("").map(lambda x: f" {x}" if x else "") + \
                wg["gpus"].map(lambda n: f" {int(n)} GPUs" if n and n > 1 else "") + \
                wg["device"].map(lambda dv: " CPU" if dv == "cpu" else "") + \
                wg["synthetic"].map(lambda x: " (synthetic)" if x else "")
            wg = wg.sort_values(["train_time_s", "who"], ascending=[False, True])
            ax.barh(wg["who"], wg["train_time_s"])
            ax.set_title(wl)
            ax.set_xlabel("training time (s)")
            ax.tick_params(axis="y", labelsize=7)
        name = f"train-time-{slug(machine)}.png"
        _save(fig, out_dir / name)
        plots.append((f"Training time per framework, {machine}", name))
    return plots


def plot_cpu_vs_gpu(df: pd.DataFrame, out_dir: Path) -> list:
    d = df[(df["workload"] == "resnet50-inference") & (df["status"] == "ok") & df["samples_per_s"].notna()]
    plots = []
    for machine, g in d.groupby("machine", sort=True):
        if set(g["device"]) != {"cpu", "gpu"}:
            continue
        opts = g["options"].map(options_label)
        g = g.assign(fw=g["framework_label"] + opts.map(lambda s: f" {s}" if s else ""))
        g = g.sort_values("samples_per_s").drop_duplicates(["fw", "device"], keep="last")
        grid = g.pivot_table(index="fw", columns="device", values="samples_per_s", aggfunc="max")
        grid = grid.reindex(columns=["gpu", "cpu"]).sort_index()
        err = g.assign(lo=_rate_err(g)[0], hi=_rate_err(g)[1])
        yerr = [[err.set_index(["fw", "device"]).reindex(
            pd.MultiIndex.from_product([grid.index, [dev]]))[k].fillna(0.0).to_numpy() for k in ("lo", "hi")]
            for dev in grid.columns]
        fig, ax = plt.subplots(figsize=(8, 3.5), layout="constrained")
        grid.plot.bar(ax=ax, logy=True, rot=0, yerr=yerr, capsize=3)
        ax.set_ylabel("images/s (log scale)")
        ax.set_xlabel("")
        ax.set_title(f"ResNet-50 inference, GPU vs CPU, {machine}")
        ax.tick_params(axis="x", labelsize=7)
        name = f"resnet50-cpu-vs-gpu-{slug(machine)}.png"
        _save(fig, out_dir / name)
        plots.append((f"ResNet-50 inference, CPU vs GPU, {machine}", name))
    return plots


def plot_throughput_by_batch(df: pd.DataFrame, out_dir: Path) -> list:
    """Throughput vs batch size, one plot per machine x workload (model, dataset) x device, a line per framework
    and precision, for every workload other than cnn-synthetic (drawn above) run at two or more batch sizes
    (a batch sweep); an out-of-memory batch is marked where the line ends."""
    d = df[(df["workload"] != "cnn-synthetic") & df["status"].isin(["ok", "oom"])]
    plots = []
    keys = ["machine", "workload", "model", "dataset", "device"]
    if d.empty:
        return []
    for key, g in d.groupby(key_series(d, keys), sort=True):
        ok = g[(g["status"] == "ok") & g["samples_per_s"].notna()]
        if ok.empty or ok.groupby(_fw(ok) + ok["precision"])["batch"].nunique().max() < 2:
            continue
        g = g.assign(fw=_fw(g) + " " + g["precision"])
        first = g.iloc[0]
        fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
        for fw, fg in g.groupby("fw", sort=True):
            good = fg[(fg["status"] == "ok") & fg["samples_per_s"].notna()].sort_values("batch")
            line = ax.errorbar(good["batch"], good["samples_per_s"], yerr=_rate_err(good), marker="o", capsize=3,
                               label=fw)
            oom = fg[fg["status"] == "oom"]
            if not oom.empty and not good.empty:
                ax.plot([oom["batch"].min()], [good["samples_per_s"].iloc[-1]], marker="x", markersize=10,
                        linestyle="none", color=line[0].get_color())
        what = " ".join(str(x) for x in (first["workload"], first["model"], first["dataset"]) if isinstance(x, str))
        where = f"{first['machine']}, {str(first['device']).upper()}"
        ax.set_title(f"{what}, {where}" + ("\n(x: out of memory)" if (g["status"] == "oom").any() else ""))
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples/s")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
        name = f"throughput-by-batch-{slug(key)}.png"
        _save(fig, out_dir / name)
        plots.append((f"Throughput by batch size, {what}, {where}", name))
    return plots


def make_plots(df: pd.DataFrame, out_dir) -> list:
    """Draws every plot that has data; [(title, file name relative to out_dir)]."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return plot_cnn_synthetic(df, out_dir) + plot_train_time(df, out_dir) + plot_cpu_vs_gpu(df, out_dir) + \
        plot_throughput_by_batch(df, out_dir)
