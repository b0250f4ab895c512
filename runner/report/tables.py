"""Report stage, Markdown: one section per README marker, in the seeds' table formats.

Every function takes the tidy frame (runner.report.frame.build_frame, one row per cell) and returns
Markdown without a heading, or '' when the frame holds nothing for that section.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import pandas as pd

from bench.workloads import WORKLOADS
from runner.report.frame import (
    _key_text, DATASET_NAMES, MISSING, MODEL_NAMES, sec_digits, _isnum, fmt_bytes_gib, fmt_fixed, fmt_pct, fmt_sec_batch, md_escape, md_table,
    key_series, options_label, row_labels, short, slug, source_line, status_text,
)

FILLER = "—"  # a value column of a failed cell, or a combination that was not run

def _framework_base(df: pd.DataFrame) -> pd.Series:
    opts = df["options"].map(options_label)
    return df["framework_label"] + opts.map(lambda s: f" {s}" if s else "")


def _failed_last(df: pd.DataFrame, by: list, ascending=True) -> pd.DataFrame:
    out = df.assign(_failed=df["status"] != "ok")
    asc = [True] + ([ascending] * len(by) if isinstance(ascending, bool) else list(ascending))
    return out.sort_values(["_failed"] + by, ascending=asc, kind="stable", na_position="last")


def _per_machine(df: pd.DataFrame):
    for machine, g in df.groupby("machine", sort=True):
        yield machine, g


def _join(blocks) -> str:
    return "\n\n".join(b for b in blocks if b)


# ------------------------------------------------------------------ uncertainty

PM = "±"
MISSED = "~"


def _has_ci(r, low: str, high: str) -> bool:
    return _isnum(r.get(low)) and _isnum(r.get(high))


def with_ci(r, text: str, half, sep: str = f" {PM} ") -> str:
    """'value ± half-width' (the 95 % CI's half-width), '~' in front when the CI missed its target;
    just the value for results without a CI (older runs)."""
    if not _isnum(half):
        return text
    ndig = len(text.split(".", 1)[1]) if "." in text else 0  # the value's own decimals
    mark = MISSED if bool(r.get("ci_missed")) else ""
    return f"{mark}{text}{sep}{float(half):,.{ndig}f}"


def rate_text(r, digits: int = 1) -> str:
    """images/s of an ok cell, with the half-width of its 95 % CI where known."""
    text = fmt_fixed(r["samples_per_s"], digits)
    half = (r["rate_high"] - r["rate_low"]) / 2.0 if _has_ci(r, "rate_low", "rate_high") else None
    return with_ci(r, text, half)


def ci_note(g: pd.DataFrame, what: str = "images/s") -> str:
    """The footnote under a table whose values carry a CI: what ± and ~ mean, and what stands behind
    a number. '' when no row has a CI (older results render as before)."""
    ok = g[(g["status"] == "ok") & g["head_s"].notna()]
    if ok.empty:
        return ""
    n = _values_text(ok["head_n"])
    steps = _values_text(ok["timed_steps"]) if ok["timed_steps"].notna().any() else n
    procs = _values_text(ok["repeat"].where(ok["repeat"].notna(), 1))
    note = (f"{PM}: half-width of the 95 % confidence interval of the median step time (a distribution-free "
            f"order-statistic interval), shown on {what}; each value is the median of {n} timed samples "
            f"({steps} steps) in {procs} process(es) per cell, after a warmup that ran until step time was "
            "steady (first-call compilation excluded).")
    if ok["ci_missed"].astype(bool).any():
        targets = sorted({float(t) for t in ok["head_target"].dropna()})
        target = " or ".join(f"{t * 100:g} %" for t in targets) if targets else "its target"
        note += (f" {MISSED}: the interval is wider than the target ({PM}{target} of the value) or has too few "
                 "samples for 95 %: sampling stopped on its time budget or step cap first.")
    return note


# ------------------------------------------------------------------ seed 003

def train_table(df: pd.DataFrame, workload: str, cudnn_column: bool = False) -> str:
    d = df[df["workload"] == workload]
    blocks = []
    for _, g in _per_machine(d):
        g = g.assign(label=row_labels(g))
        g = _failed_last(g, ["train_time_s", "label"])
        headers = ["DL Library", "Test Accuracy (%)", "Training Time (s)"] + (["Using CuDNN?"] if cudnn_column else [])
        rows = []
        for _, r in g.iterrows():
            if r["status"] == "ok":
                row = [r["label"], fmt_pct(r["test_accuracy"]), fmt_fixed(r["train_time_s"], 2)]
                if cudnn_column:
                    row.append({True: "Yes", False: "No"}.get(r["cudnn_rnn"], MISSING))
            else:
                row = [r["label"], status_text(r), FILLER] + ([FILLER] if cudnn_column else [])
            rows.append(row)
        blocks.append(source_line(g) + "\n\n" + md_table(headers, rows))
    return _join(blocks)


def resnet50_inference(df: pd.DataFrame) -> str:
    d = df[df["workload"] == "resnet50-inference"]
    blocks = []
    quals_combo = ("python", "precision", "iterations")
    for _, g in _per_machine(d):
        g = g.assign(combo=row_labels(g, qualifiers=quals_combo))
        g = g.assign(text=[rate_text(r) if r["status"] == "ok" else status_text(r) for _, r in g.iterrows()])
        sides = {}
        for dev in ("gpu", "cpu"):
            s = g[g["device"] == dev]
            s = s.assign(label=row_labels(s, qualifiers=("toolchain", "gpu_count_q", "batch") + quals_combo))
            s = s.assign(n=s.groupby("combo")["combo"].transform("size"))
            sides[dev] = s[["combo", "label", "text", "n", "samples_per_s", "status", "batch"]]
        merged = sides["gpu"].merge(sides["cpu"], on="combo", how="outer", suffixes=("_gpu", "_cpu"))
        single = (merged["n_gpu"] == 1) & (merged["n_cpu"] == 1)
        rows = []
        for _, r in merged.iterrows():
            if single[_]:
                label = r["combo"]
                if r["batch_gpu"] != r["batch_cpu"]:
                    label += f" (batch {int(r['batch_gpu'])} GPU, {int(r['batch_cpu'])} CPU)"
            else:
                label = r["label_gpu"] if isinstance(r["label_gpu"], str) else r["label_cpu"]
            gpu = r["text_gpu"] if isinstance(r["text_gpu"], str) else FILLER
            cpu = r["text_cpu"] if isinstance(r["text_cpu"], str) else FILLER
            # multiple GPU variants of one combo share the CPU number; repeat it only when it is unique
            if not single[_] and isinstance(r["text_cpu"], str) and r["n_gpu"] > 1:
                cpu = r["text_cpu"]
            rows.append((r["status_gpu"] != "ok", -(r["samples_per_s_gpu"] if _isnum(r["samples_per_s_gpu"]) else -1),
                         label, [label, gpu, cpu]))
        rows.sort(key=lambda t: (t[0], t[1], t[2]))
        note = ci_note(g)
        blocks.append(source_line(g) + "\n\n" + md_table(["DL Library", "Images/s GPU", "Images/s CPU"],
                                                         [t[3] for t in rows]) + ("\n\n" + note if note else ""))
    return _join(blocks)


# ------------------------------------------------------------------ seed 001

def _values_text(values, unit: str = "") -> str:
    vals = sorted({int(v) for v in values if _isnum(v)})
    if not vals:
        return "an unknown number of"
    if len(vals) == 1:
        return f"{vals[0]}{unit}"
    # the range; each cell's own count is in results.csv (head_n, timed_steps)
    return f"{vals[0]} to {vals[-1]}{unit}"


def vgg16_step(df: pd.DataFrame) -> str:
    d = df[df["workload"] == "vgg16-step"]
    blocks = []
    for machine, g in _per_machine(d):
        g = g.assign(label=row_labels(g))
        per_trial = (g["timed_wall_s"] / g["step_n"]).where(g["timed_wall_s"].notna() & (g["step_n"] > 0),
                                                            g["step_mean_s"])
        # results with a headline: its median step time; older ones: seed 001's span / N
        g = g.assign(ms=g["head_s"].where(g["head_s"].notna(), per_trial) * 1000.0,
                     half_ms=(g["head_high_s"] - g["head_low_s"]) / 2.0 * 1000.0)
        g = _failed_last(g, ["ms", "label"])
        anchor = f"vgg16-time-{slug(machine)}"
        rows = [[r["label"], with_ci(r, fmt_fixed(r["ms"], 3), r["half_ms"]) + " ms" if r["status"] == "ok"
                 else status_text(r)] for _, r in g.iterrows()]
        ok = g[g["status"] == "ok"]
        b = _values_text(ok["batch"])
        w = _values_text(ok["warmup"])
        old, new = ok[ok["head_s"].isna()], ok[ok["head_s"].notna()]
        notes = []
        if not old.empty:
            n = _values_text(old["step_n"].where(old["step_n"].notna(), old["iterations"]))
            notes.append(f"Wall time of N = {n} consecutive VGG16 training steps "
                         f"(forward pass, backward pass and weight update on a mini-batch of B = {b} images), "
                         "measured from just before the first step to just after the last, divided by N. "
                         f"Warm-up steps before them (W = {w}) are not timed.")
        if not new.empty:
            notes.append("Median time of one VGG16 training step (forward pass, backward pass and weight update "
                         f"on a mini-batch of B = {b} images). " + ci_note(new, what="the time"))
        note = f'<a name="{anchor}">1</a>: ' + " ".join(notes)
        table = md_table(["Framework", f"Time <sup>[1](#{anchor})</sup>"], rows, align=["left", "left"])
        blocks.append(source_line(g) + "\n\n" + table + "\n\n" + note)
    return _join(blocks)


# ------------------------------------------------------------------ seed 004

def _device_name(g: pd.DataFrame, device: str) -> str:
    if device == "gpu":
        names = g["gpu_name"].dropna()
        count = int(g["gpus"].max()) if _isnum(g["gpus"].max()) else 1
        name = names.iloc[0] if len(names) else "GPU"
        return f"{count}x {name}" if count > 1 else str(name)
    names = g["cpu_model"].dropna()
    return f"CPU: {names.iloc[0]}" if len(names) else "CPU"


def cnn_synthetic(df: pd.DataFrame) -> str:
    d = df[df["workload"] == "cnn-synthetic"]
    if d.empty:
        return ""
    parts = []
    for _, sub in d.groupby(["machine", "device", "precision"], sort=True):
        parts.append(sub.assign(fw=row_labels(sub, qualifiers=("toolchain", "python", "gpu_count_q", "iterations"),
                                              mark_synthetic=False)))
    d = pd.concat(parts)
    blocks = []
    for (machine, device, precision, fw), g in d.groupby(["machine", "device", "precision", "fw"], sort=True):
        models = [m for m in MODEL_NAMES if m in set(g["model"])] + \
                 sorted(m for m in set(g["model"].dropna()) if m not in MODEL_NAMES)
        g = g.assign(text=[rate_text(r) if r["status"] == "ok" else status_text(r) for _, r in g.iterrows()])
        grid = g.pivot_table(index="batch", columns="model", values="text", aggfunc="first")
        rows = []
        for batch in sorted(grid.index):
            rows.append([str(int(batch))] + [grid.at[batch, m] if m in grid.columns and isinstance(
                grid.at[batch, m], str) else FILLER for m in models])
        optim = g.assign(opt=g["options"].map(lambda o: str(o.get("optimizer", "sgd"))))
        opt_by_model = optim.groupby("model")["opt"].agg(lambda s: "/".join(sorted(set(s))))
        rows.append(["Optimizer"] + [opt_by_model.get(m, FILLER) for m in models])
        dataset = "Synthetic" if g["synthetic"].all() else ", ".join(
            sorted({DATASET_NAMES.get(x, str(x)) for x in g["dataset"].dropna()}) or ["real data"])
        header = (f"Precision: {precision}<br />\nDataset: {dataset}\n\n"
                  f"**{md_escape(_device_name(g, device))}, {md_escape(fw)} (images/sec)**")
        table = md_table(["Batchsize"] + [MODEL_NAMES.get(m, m) for m in models], rows)
        note = ci_note(g)
        blocks.append(source_line(g) + "\n\n" + header + "\n\n" + table + ("\n\n" + note if note else ""))
    return _join(blocks)


def alexnet(df: pd.DataFrame) -> str:
    d = df[df["workload"].isin(["alexnet-fwd", "alexnet-fwdbwd"])]
    names = {"alexnet-fwd": "Forward", "alexnet-fwdbwd": "Forward-backward"}
    blocks = []
    for _, g in _per_machine(d):
        g = g.assign(label=row_labels(g, qualifiers=("device", "gpu_count_q", "toolchain", "python", "precision",
                                                     "batch")))

        def text(r):
            if r["status"] != "ok":
                return status_text(r)
            if _isnum(r["head_s"]):  # median +/- the 95 % CI half-width
                digits = sec_digits(r["head_s"])
                return with_ci(r, fmt_sec_batch(r["head_s"], digits), (r["head_high_s"] - r["head_low_s"]) / 2.0,
                               sep=" +/- ")
            # older results: the seed's mean +/- population std
            digits = sec_digits(r["step_mean_s"])
            return f"{fmt_sec_batch(r['step_mean_s'], digits)} +/- {fmt_sec_batch(r['step_std_s'], digits)}"

        g = g.assign(text=[text(r) for _, r in g.iterrows()])
        lines = []
        for label, lg in g.groupby("label", sort=True):
            out = []
            for wl in ("alexnet-fwd", "alexnet-fwdbwd"):
                for _, r in lg[lg["workload"] == wl].iterrows():
                    n = int(r["step_n"]) if _isnum(r["step_n"]) else (int(r["iterations"]) if _isnum(
                        r["iterations"]) else None)
                    steps = f"{n} steps" if n is not None else "all steps"
                    if r["status"] == "ok":
                        out.append(f"{names[wl]} across {steps}, {r['text']} sec / batch")
                    else:
                        out.append(f"{names[wl]}: {r['text']}")
            batch = ", ".join(f"batch {int(b)}" for b in sorted(set(lg["batch"])))
            lines.append(f"**{md_escape(label)}** ({batch}):\n\n```\n" + "\n".join(out) + "\n```")
        grid = g.pivot_table(index="label", columns="workload", values="text", aggfunc="first")
        rows = [[label] + [grid.at[label, wl] if wl in grid.columns and isinstance(grid.at[label, wl], str)
                           else FILLER for wl in names] for label in sorted(grid.index)]
        table = md_table(["Framework", "Forward (sec / batch)", "Forward-backward (sec / batch)"], rows)
        note = ci_note(g, what="sec / batch").replace(f"{PM}:", "+/-:", 1)
        if note and g.loc[g["status"] == "ok", "head_s"].isna().any():
            note += " Values without an interval come from older runs: their +/- is the population std of the steps."
        blocks.append(source_line(g) + "\n\n" + "\n\n".join(lines) + "\n\n" + table + ("\n\n" + note if note else ""))
    return _join(blocks)


# ------------------------------------------------------------------ seed 000

def _train_lines(r, inference: bool = True) -> list[str]:
    if r["status"] != "ok":
        return [f"Training: {status_text(r)} <br />"]
    out = [f"Training: {fmt_fixed(r['train_time_s'], 2)} s <br />",
           f"Accuracy: {fmt_pct(r['test_accuracy'])} % <br />"]
    if inference and _isnum(r["inference_time_s"]):
        out.append(f"Inference: {fmt_fixed(r['inference_time_s'], 2)} s <br />")
    return out


def lenet_mnist(df: pd.DataFrame) -> str:
    d = df[df["workload"] == "lenet-mnist"]
    if d.empty:
        return ""
    d = d.assign(fw=_framework_base(d))
    out = [source_line(d)]
    for fw, g in d.groupby("fw", sort=True):
        base = g["machine"] + ", " + g["dataset"].map(lambda x: DATASET_NAMES.get(x, str(x)) if isinstance(
            x, str) else "MNIST")
        g = g.assign(where=row_labels(g, base=base, qualifiers=("device", "gpu_count_q", "toolchain", "python",
                                                                 "precision", "batch", "iterations")))
        g = g.sort_values(["machine", "where"], kind="stable")
        block = [f"___{md_escape(fw)}___ <br />"]
        for _, r in g.iterrows():
            block.append("\n".join([f"{md_escape(r['where'])} <br />"] + _train_lines(r)))
        out.append("\n\n".join(block))
    return _join(out)


def _gpu_block(r) -> str:
    if r["device"] == "cpu" or not r["gpus"]:
        return "CPU"
    n = int(r["gpus"])
    return {1: "Single GPU", 2: "Dual GPUs"}.get(n, f"{n} GPUs")


def cifar10_tutorial(df: pd.DataFrame) -> str:
    d = df[df["workload"] == "cifar10-tutorial"]
    blocks = []
    for _, m in _per_machine(d):
        m = m.assign(fw=_framework_base(m))
        out = [source_line(m)]
        for fw, g in m.groupby("fw", sort=True):
            base = g.apply(_gpu_block, axis=1)
            order = base.map({"CPU": 0, "Single GPU": 1, "Dual GPUs": 2})
            g = g.assign(block=row_labels(g, base=base, qualifiers=("toolchain", "python", "dataset", "precision",
                                                                     "batch", "iterations")),
                         order=order.fillna(g["gpus"]))
            g = g.sort_values(["order", "block"], kind="stable")
            parts = [f"**{md_escape(fw)}**"]
            for _, r in g.iterrows():
                parts.append("\n".join([f"___{md_escape(r['block'])}___ <br />"] + _train_lines(r)))
            out.append("\n\n".join(parts))
        blocks.append(_join(out))
    return _join(blocks)


# ------------------------------------------------------------------ seed 002

def vgg19_mnist(df: pd.DataFrame) -> str:
    d = df[df["workload"] == "vgg19-mnist"]
    blocks = []
    tests = {"mnist": "Original MNIST", "fashion-mnist": "Fashion MNIST"}
    for machine, m in _per_machine(d):
        m = m.assign(fw=_framework_base(m))
        for fw, g in m.groupby("fw", sort=True):
            base = g["dataset"].map(lambda x: tests.get(x, DATASET_NAMES.get(x, str(x))) if isinstance(
                x, str) else "unknown dataset")
            g = g.assign(test=row_labels(g, base=base), order=g["dataset"].map({"mnist": 0, "fashion-mnist": 1}))
            g = g.sort_values(["order", "test"], kind="stable", na_position="last")
            rows = []
            for _, r in g.iterrows():
                if r["status"] == "ok":
                    total = r["total_time_s"] if _isnum(r["total_time_s"]) else r["train_time_s"]
                    rows.append([r["test"], fmt_fixed(total, 2), fmt_fixed(r["inference_time_s"], 2), "No error"])
                else:
                    err = status_text(r)
                    if r["status"] == "error" and short(r["message"]):
                        err = f"error: {short(r['message'])}"
                    rows.append([r["test"], FILLER, FILLER, err])
            table = md_table(["Test", "Execution Time (s)", "Inference Time (s)", "Error"], rows,
                             align=["left", "right", "right", "left"])
            blocks.append(source_line(g) + f" Framework: {md_escape(fw)}.\n\n" + table)
    return _join(blocks)


# ------------------------------------------------------------------ beyond the seeds

def hardware(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    blocks = []
    for machine, g in _per_machine(df):
        info = g[["hostname", "cpu_model", "cpu_cores", "ram_bytes", "gpu_name", "gpu_memory_bytes",
                  "gpu_driver", "gpu_sm_clock_mhz", "os"]].apply(lambda s: s.dropna().iloc[0] if s.notna().any()
                                                               else None)
        count = int(g["gpu_count"].max()) if len(g) else 0
        gpu = MISSING if count == 0 else f"{count}x {info['gpu_name']}"
        if count and _isnum(info["gpu_memory_bytes"]):
            gpu += f" ({fmt_bytes_gib(info['gpu_memory_bytes'])} each)" if count > 1 else \
                f" ({fmt_bytes_gib(info['gpu_memory_bytes'])})"
        if count == 0:
            gpu = "none"
        # a plain dict: NaN (all values missing, e.g. a broken file) is no description, None is
        info = {k: (v if isinstance(v, str) or _isnum(v) else None) for k, v in info.items()}
        rows = [["CPU", info["cpu_model"] or MISSING],
                ["Cores", str(int(info["cpu_cores"])) if _isnum(info["cpu_cores"]) else MISSING],
                ["RAM", fmt_bytes_gib(info["ram_bytes"])],
                ["GPU", gpu]]
        if count:
            rows.append(["GPU driver", info["gpu_driver"] or MISSING])
            if _isnum(info["gpu_sm_clock_mhz"]):
                rows.append(["GPU SM clock", f"{int(info['gpu_sm_clock_mhz'])} MHz"])
        rows.append(["OS", info["os"] or MISSING])
        host = f" (host `{info['hostname']}`)" if info["hostname"] and info["hostname"] != machine else ""
        runs = ", ".join(f"`{x}`" for x in sorted(g["run_id"].astype(str).unique()))
        part = [f"**{md_escape(machine)}**{host}, as reported by run{'s' if ',' in runs else ''} {runs}:",
                md_table(["Component", "Description"], rows, align=["left", "left"])]
        fw = g[g["reported_version"].notna()]
        fw = fw.assign(fwl=fw["framework_label"])
        if not fw.empty:
            fw = fw.drop_duplicates(["fwl", "reported_version", "toolchain", "cuda", "cudnn", "env_python"]) \
                .sort_values(["fwl", "toolchain"], kind="stable")
            cpu_build = "none (CPU build)"
            frows = [[r["fwl"], r["reported_version"], r["toolchain"] or MISSING,
                      r["cuda"] if isinstance(r["cuda"], str) else cpu_build,
                      r["cudnn"] if isinstance(r["cudnn"], str) else cpu_build,
                      r["env_python"] if isinstance(r["env_python"], str) else MISSING] for _, r in fw.iterrows()]
            part.append(f"Framework builds on **{md_escape(machine)}** and the CUDA / cuDNN each reports, "
                        f"as reported by run{'s' if ',' in runs else ''} {runs}:")
            part.append(md_table(["Framework", "Reports version", "Toolchain", "CUDA", "cuDNN", "Python"], frows,
                                 align=["left"] * 6))
        blocks.append("\n\n".join(part))
    return _join(blocks)


def _primary(workload: str):
    kind = WORKLOADS.get(workload, {}).get("kind", "step")
    if kind == "train":
        return "time", "training time (s)"
    return "rate", "images/s"


def version_matrix(df: pd.DataFrame) -> str:
    blocks = []
    for workload in [w for w in WORKLOADS if w in set(df["workload"])]:
        d = df[df["workload"] == workload]
        kind, what = _primary(workload)
        for machine, g in _per_machine(d):
            g = g.assign(row=row_labels(g, qualifiers=("gpu_count_q", "python", "precision", "batch", "dataset", "model",
                                                       "iterations", "epochs")))

            def text(r):
                if r["status"] != "ok":
                    return status_text(r)
                if kind == "time":
                    t = r["train_time_s"] if _isnum(r["train_time_s"]) else r["total_time_s"]
                    return fmt_fixed(t, 2)
                return rate_text(r)

            g = g.assign(text=[text(r) for _, r in g.iterrows()], toolchain=g["toolchain"].fillna("unknown"))
            grid = g.pivot_table(index="row", columns="toolchain", values="text", aggfunc="first")
            cols = sorted(grid.columns, key=lambda t: (t == "cpu", t))
            rows = [[row] + [grid.at[row, c] if isinstance(grid.at[row, c], str) else FILLER for c in cols]
                    for row in sorted(grid.index)]
            title = f"**{WORKLOADS[workload]['title']}**, {what}"
            note = ci_note(g) if kind == "rate" else ""
            blocks.append(source_line(g) + "\n\n" + title + "\n\n" + md_table(["Framework"] + cols, rows)
                          + ("\n\n" + note if note else ""))
            eff = efficiency_table(g)
            if eff:
                blocks.append(eff)
    return _join(blocks)


def efficiency_table(g: pd.DataFrame) -> str:
    """Throughput, jitter, MFU, images/s per W and peak memory of the ok cells; unknown columns omitted;
    '' unless MFU or energy is known somewhere."""
    ok = g[g["status"] == "ok"]
    if ok.empty or not (ok["mfu"].notna().any() or ok["samples_per_j"].notna().any()):
        return ""
    ok = ok.sort_values(["row", "toolchain"], kind="stable")
    cols = [("Images/s", ok["samples_per_s"].map(lambda x: fmt_fixed(x, 1))),
            ("Step jitter (%)", (ok["step_jitter_s"] / ok["step_median_s"]).map(lambda x: fmt_pct(x))),
            ("MFU (%)", ok["mfu"].map(lambda x: fmt_pct(x))),
            ("Images/s per W", ok["samples_per_j"].map(lambda x: fmt_fixed(x, 2))),
            ("Peak memory", ok["peak_memory_bytes"].map(fmt_bytes_gib))]
    cols = [(h, s) for h, s in cols if (s != MISSING).any()]
    headers = ["Framework", "Toolchain"] + [h for h, _ in cols]
    rows = [[r["row"], r["toolchain"]] + [s[i] for _, s in cols] for i, r in ok.iterrows()]
    align = ["left", "left"] + ["right"] * len(cols)
    return source_line(ok) + " Efficiency of the cells above:\n\n" + md_table(headers, rows, align=align)


SWEEP_KEY = ["framework_label", "options_key", "toolchain", "workload", "model", "dataset", "synthetic",
             "device", "gpus", "precision"]


def _workload_text(r) -> str:
    model = MODEL_NAMES.get(r["model"], r["model"]) if isinstance(r["model"], str) else ""
    dataset = DATASET_NAMES.get(r["dataset"], r["dataset"]) if isinstance(r["dataset"], str) else ""
    return " ".join(x for x in (r["workload"], model, dataset) if x)


def batch_limit(df: pd.DataFrame) -> str:
    """"Largest batch that fits": every framework x workload x device x precision run at more than one batch
    size (a batch sweep, or a list) or that ran out of memory: the largest batch that ran ok, its throughput,
    and the smallest batch that ran out of memory ("none" up to the largest tried)."""
    blocks = []
    for _, g in _per_machine(df[df["status"].isin(["ok", "oom"])]):
        rows = []
        for _, grp in g.groupby(key_series(g, SWEEP_KEY), sort=False):
            oom = grp[grp["status"] == "oom"]
            if grp["batch"].nunique() < 2 and oom.empty:
                continue
            ok = grp[grp["status"] == "ok"].sort_values("batch")
            first = grp.iloc[0]
            label = row_labels(grp.head(1)).iloc[0]
            device = "CPU" if first["device"] == "cpu" else f"{int(first['gpus'])} GPU" + \
                ("s" if first["gpus"] != 1 else "")
            if ok.empty:
                fits, rate = "none", FILLER
            else:
                top = ok.iloc[-1]
                fits = str(int(top["batch"]))
                rate = rate_text(top) if _isnum(top["samples_per_s"]) else FILLER
            tried = sorted(int(b) for b in grp["batch"].dropna().unique())
            oom_at = f"{int(oom['batch'].min())}" if not oom.empty else f"none up to {tried[-1]}"
            rows.append([label, _workload_text(first), device, first["precision"], fits, rate, oom_at,
                         ", ".join(map(str, tried))])
        if rows:
            rows.sort(key=lambda r: (r[1], r[2], r[3], r[0]))
            table = md_table(["Framework", "Workload", "Device", "Precision", "Largest batch that fits",
                              "Samples/s at it", "Out of memory at", "Batches run"], rows,
                             align=["left"] * 4 + ["right"] * 4)
            blocks.append(source_line(g) + "\n\n" + table + "\n\nA batch sweep (`sweep:` or `batch_sizes: auto` "
                          "in matrix.yaml) runs its batches smallest first and stops at the first out-of-memory; "
                          "the batches past it are not run. Samples/s: median ± the half-width of its 95 % "
                          "interval.")
    return _join(blocks)


def failures(df: pd.DataFrame) -> str:
    bad = df[df["status"] != "ok"]
    if bad.empty:
        return ""
    bad = bad.sort_values(["machine", "run_id", "workload", "cell_id"], kind="stable")
    rows = [[r["machine"], r["run_id"], r["cell_id"], r["status"] if r["status"] != "oom" else status_text(r),
             short(r["message"], 120) or FILLER] for _, r in bad.iterrows()]
    return source_line(bad) + "\n\n" + md_table(["Machine", "Run", "Cell", "Status", "Details"], rows,
                                                align=["left"] * 5)


def plots_section(plots: list) -> str:
    """plots: [(title, relative link)]"""
    return "\n\n".join(f"![{md_escape(title)}]({link})" for title, link in plots)


def how_run(df: pd.DataFrame) -> str:
    """How each framework ran, from the settings its adapter recorded in the results: one row per
    framework x device x precision x distinct settings, then what each precision name means."""
    from bench.adapters.base import PRECISION_METHODS   # the one definition, shared with bench
    d = df[df["set_graph"].notna()]
    if d.empty:
        return ""
    cols = ["set_layout", "set_graph", "set_loss_scaler", "set_tf32", "set_threads"]

    def text(v) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        return _key_text(v) or FILLER

    d = d.assign(fw=_framework_base(d), **{c: d[c].map(text) for c in cols})
    groups = d.groupby(["fw", "device", "precision"] + cols, sort=True)
    rows = [[md_escape(fw), dev, prec] + [md_escape(v) for v in values] + [str(len(g))]
            for (fw, dev, prec, *values), g in groups]
    table = md_table(["Framework", "Device", "Precision", "Layout", "Graph / compilation", "Loss scaler",
                      "TF32", "CPU threads", "Cells"], rows, align=["left"] * 8 + ["right"])
    used = [p for p in ("fp32", "amp", "bf16", "fp16") if p in set(d["precision"])]
    meanings = "\n".join(f"- `{p}`: {PRECISION_METHODS[p]}" for p in used)
    timed = ("What is timed: timed workloads (step time, images/s) time the training or inference step alone, "
             "on a batch already on the device, after a warmup that ran until step time was steady; "
             "training workloads time the whole loop, feeding included, as the seeds did.")
    return (source_line(d) + " Settings each adapter recorded in its results (`settings` in the result "
            "JSON):\n\n" + table + "\n\nPrecision names mean the same method in every framework; a "
            "framework that cannot run a method reports the cell `unsupported` with the reason:\n\n"
            + meanings + "\n\n" + timed)


# ------------------------------------------------------------------ the one registry of sections

class Section(object):
    """A README section: its marker name, title, and builder(df, extras) -> Markdown ('' when empty)."""

    def __init__(self, name: str, title: str, builder):
        self.name, self.title, self.builder = name, title, builder


SECTIONS = OrderedDict((s.name, s) for s in [
    Section("hardware", "Hardware used", lambda df, x: hardware(df)),
    Section("settings", "How each framework is run", lambda df, x: how_run(df)),
    Section("cifar10-cnn", WORKLOADS["cifar10-cnn"]["title"], lambda df, x: train_table(df, "cifar10-cnn")),
    Section("gru-imdb", WORKLOADS["gru-imdb"]["title"],
            lambda df, x: train_table(df, "gru-imdb", cudnn_column=True)),
    Section("resnet50-inference", WORKLOADS["resnet50-inference"]["title"], lambda df, x: resnet50_inference(df)),
    Section("vgg16-step", "VGG16: forward + backward + update", lambda df, x: vgg16_step(df)),
    Section("cnn-synthetic", "CNN training throughput on synthetic data (tf_cnn_benchmarks style)",
            lambda df, x: cnn_synthetic(df)),
    Section("batch-limit", "Largest batch that fits", lambda df, x: batch_limit(df)),
    Section("alexnet", "AlexNet forward and forward-backward", lambda df, x: alexnet(df)),
    Section("lenet-mnist", "LeNet on MNIST", lambda df, x: lenet_mnist(df)),
    Section("cifar10-tutorial", "CIFAR-10 tutorial model on 1 and 2 GPUs", lambda df, x: cifar10_tutorial(df)),
    Section("vgg19-mnist", "Hardware benchmark: VGG19 on MNIST and Fashion MNIST", lambda df, x: vgg19_mnist(df)),
    Section("version-matrix", "Version matrix", lambda df, x: version_matrix(df)),
    Section("comparison", "Comparison against a baseline run", lambda df, x: x.get("comparison") or ""),
    Section("plots", "Plots", lambda df, x: plots_section(x.get("plots") or [])),
    Section("failures", "Failed, skipped and missing cells", lambda df, x: failures(df)),
])
SECTION_NAMES = tuple(SECTIONS)
SECTION_TITLES = OrderedDict((name, s.title) for name, s in SECTIONS.items())


def build_sections(df: pd.DataFrame, plots: Optional[list] = None, comparison: str = "") -> "OrderedDict[str, str]":
    """Markdown per section name ('' where there is nothing to show), in the registry's order."""
    extras = {"plots": plots or [], "comparison": comparison}
    return OrderedDict((name, s.builder(df, extras)) for name, s in SECTIONS.items())
