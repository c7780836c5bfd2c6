#!/usr/bin/python3
"""Writes docs/EVALUATION.md and its plots from evaluate.py's RESULTS.json.

usage: report.py RESULTS.json[,MORE.json...] DOCS_DIR [DELTA.json [PROGRESSIVE.json]]

Several RESULTS files (evaluate.py runs over different models) are reported as one. Without
DELTA.json or PROGRESSIVE.json, that section of the existing DOCS_DIR/EVALUATION.md is carried
over unchanged under a note saying which run it came from. The hand-written "Accuracy tiers"
section (accuracy_tiers.py's runs) is carried over as it is.
"""
import re
import datetime
import json
import os
import platform
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LOSS_POINTS = 0.5  # the accuracy loss the summary asks about
# Issue 21's goals: the smallest tier within LOSS_POINTS of float top-1, as % of float32 bytes.
GOALS = {"fc_cnn": 3.0, "mlp": 3.0, "res_cnn": 12.0}


def kb(n):
    return f"{n / 1000:,.1f} kB"


def pct(part, whole):
    return f"{100 * part / whole:.2f} %"


def layer_bytes(tier, name):
    for layer in tier["layers"]:
        if layer["name"] == name:
            return layer["bytes"]
    return None


def best_within(entry, rows):
    """The smallest row whose top-1 is within LOSS_POINTS of the float model's."""
    ok = [r for r in rows if entry["float"]["top1"] - r["top1"] <= LOSS_POINTS]
    return min(ok, key=lambda r: r["bytes"]) if ok else None


def table(entry, variant):
    fc = entry["fc"]
    head = ["", "top-1 %", "top-2 %", "server top-1 %", "output cosine", "worst SQNR dB (all layers)"] + \
        [f"{n} bytes" for n in fc] + ["model bytes", "of float"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    f = entry["float"]
    lines.append("| " + " | ".join(["Original (float32)", f"{f['top1']:.2f}", f"{f['top2']:.2f}",
                                    f"{variant['server_reference']['top1']:.2f}", "1", ""] +
                                   [f"{entry['fc_float_bytes'][n]:,}" for n in fc] +
                                   [f"{entry['float_bytes']:,}", "100 %"]) + " |")
    lossless = next(t for t in variant["tiers"] if t["name"] == "lossless")
    lines.append("| " + " | ".join(["Quant (int8, raw)", f"{lossless['top1']:.2f}", f"{lossless['top2']:.2f}", "", "", "",
                                    *[f"{entry['fc_float_bytes'][n] // 4:,}" for n in fc],
                                    f"{entry['int8_bytes']:,}", pct(entry["int8_bytes"], entry["float_bytes"])]) + " |")

    def row(label, t):
        return "| " + " | ".join([label, f"{t['top1']:.2f}", f"{t['top2']:.2f}", f"{t['server_top1']:.2f}",
                                  f"{t['cosine']:.4f}", db(t["worst_layer_sqnr_db"])] +
                                 [f"{layer_bytes(t, n):,}" for n in fc] +
                                 [f"{t['bytes']:,}", pct(t["bytes"], entry["float_bytes"])]) + " |"

    for t in variant["tiers"]:
        lines.append(row("int8 + zstd (tier `lossless`)" if t["name"] == "lossless" else f"tier `{t['name']}`", t))
    for t in variant.get("budget_tiers", []):
        lines.append(row(f"tier `{t['name']}` (QP per layer)", t))
    for r in variant.get("requant", []):
        lines.append("| " + " | ".join([f"requant + zstd, step {r['step']:.1f} (bytes of `{r['matched']}`)",
                                        f"{r['top1']:.2f}", f"{r['top2']:.2f}", "", "", ""] + ["" for _ in fc] +
                                       [f"{r['bytes']:,}", pct(r["bytes"], entry["float_bytes"])]) + " |")
    return "\n".join(lines)


def db(value):
    return "inf" if value is None else f"{value:.1f}"


def front_end_table(entry):
    """Models registered under several int8 front ends: each tier side by side (bytes, top-1, drop,
    output cosine, worst SQNR over every layer, layers given per-row scales). A budget tier is
    paired by the uniform tier whose bytes it was given (its own variant's)."""
    variants = entry["variants"]
    head = ["tier"]
    for v in variants:
        head += [f"{v.get('front_end', 'auto')} bytes", "top-1 %", "drop", "cosine", "worst SQNR dB"]
    head.append(f"per-row layers ({variants[-1].get('front_end', 'auto')})")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def keyed(v):
        out = {t["name"]: t for t in v["tiers"]}
        for b in v.get("budget_tiers", []):
            target = int(b["name"].split("-")[1])
            matched = next((t["name"] for t in v["tiers"] if t["bytes"] == target), b["name"])
            out[f"budget ({matched}'s bytes)"] = b
        return out

    by_key = [keyed(v) for v in variants]
    float_top1 = entry["float"]["top1"]
    keys = list(dict.fromkeys(k for b in by_key for k in b))
    for key in keys:
        cells = [key if key.startswith("budget") else f"`{key}`"]
        for t in (b.get(key) for b in by_key):
            cells += ([f"{t['bytes']:,}", f"{t['top1']:.2f}", f"{t['top1'] - float_top1:+.2f}", f"{t['cosine']:.4f}",
                       db(t["worst_layer_sqnr_db"])] if t else ["", "", "", "", ""])
        last = by_key[-1].get(key)
        int8 = sum(1 for l in last["layers"] if l["quant_scheme"]) if last else 0
        cells.append(f"{len(last['per_channel'])} of {int8}" if last else "")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def accuracy_plot(model, entry, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for v in entry["variants"]:
        hevc = [t for t in v["tiers"] if t["name"] != "lossless"]
        ax.plot([t["bytes"] for t in hevc], [t["top1"] for t in hevc], "o-", label=f"uniform QP ({v['version']})")
        for t in hevc:
            ax.annotate(t["name"], (t["bytes"], t["top1"]), fontsize=6, xytext=(2, 2), textcoords="offset points")
        if v.get("budget_tiers"):
            b = v["budget_tiers"]
            ax.plot([t["bytes"] for t in b], [t["top1"] for t in b], "s-", label=f"QP per layer, budget ({v['version']})")
        if v.get("requant"):
            r = v["requant"]
            ax.plot([t["bytes"] for t in r], [t["top1"] for t in r], "^--", label="requantize + zstd")
    lossless = entry["variants"][0]["tiers"][0]
    ax.plot([lossless["bytes"]], [lossless["top1"]], "kD", label="int8 + zstd")
    ax.axhline(entry["float"]["top1"], color="gray", linestyle=":", label="float32")
    ax.axhline(entry["float"]["top1"] - LOSS_POINTS, color="gray", linestyle="--", linewidth=0.7,
               label=f"float32 - {LOSS_POINTS} point")
    ax.set_xscale("log")
    ax.set_xlabel("model bytes (all layers, as pulled)")
    ax.set_ylabel("top-1 % (10,000 test images)")
    ax.set_ylim(max(0, entry["float"]["top1"] - 15), entry["float"]["top1"] + 2)
    ax.set_title(f"{model}: accuracy vs size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sqnr_plot(model, entry, path):
    v = next((v for v in entry["variants"] if v.get("requant")), entry["variants"][0])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = sorted({l["name"] for t in v["tiers"] for l in t["layers"] if l["codec"] == "LAYER_CODEC_HEVC"})
    for i, name in enumerate(names):
        color = f"C{i % 10}"
        pts = [(l["bits_per_weight"], l["sqnr_db"]) for t in v["tiers"] for l in t["layers"]
               if l["name"] == name and l["codec"] == "LAYER_CODEC_HEVC" and l["sqnr_db"] is not None]
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=color, label=f"{name} HEVC")
        req = [(r["bits_per_weight"][name], r["sqnr"][name]) for r in v.get("requant", []) if name in r["sqnr"]]
        req.sort()
        if req:
            ax.plot([p[0] for p in req], [p[1] for p in req], "^--", color=color, label=f"{name} requant+zstd")
    rates = [r / 10 for r in range(1, 81)]
    ax.plot(rates, [6.02 * r for r in rates], "k-", linewidth=0.8, label="6.02·R dB (Gaussian R-D bound)")
    ax.plot(rates, [6.02 * r - 1.53 for r in rates], "k--", linewidth=0.8, label="6.02·R − 1.53 dB (entropy-coded scalar)")
    ax.set_xlim(0, 6)
    ax.set_ylim(0, 40)
    ax.set_xlabel("bits per weight (packed layer)")
    ax.set_ylabel("SQNR vs float weights (dB)")
    ax.set_title(f"{model}: SQNR per layer")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def equal_bytes(entry):
    """Uniform QP vs QP per layer vs requantize + zstd, pair by pair at the same bytes."""
    lines = []
    for v in entry["variants"]:
        if not v.get("budget_tiers"):
            continue
        requant = {r["matched"]: r for r in v.get("requant", [])}
        for b in v["budget_tiers"]:
            target = int(b["name"].split("-")[1])
            u = next(t for t in v["tiers"] if t["bytes"] == target)
            r = requant.get(u["name"])
            lines.append(f"| {v['version']} | `{u['name']}` | {u['bytes']:,} | {u['top1']:.2f} | {b['bytes']:,} | "
                         f"{b['top1']:.2f} | {b['top1'] - u['top1']:+.2f} | " +
                         (f"{r['bytes']:,} | {r['top1']:.2f} |" if r else " | |"))
    return lines


def variants_side_by_side(entry):
    """Each layer policy's tiers side by side (bytes / top-1), for models studied under several."""
    names = [t["name"] for t in entry["variants"][0]["tiers"]]
    lines = ["| policy | " + " | ".join(f"`{n}` bytes / top-1 %" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for v in entry["variants"]:
        by_name = {t["name"]: t for t in v["tiers"]}
        cells = [f"{by_name[n]['bytes']:,} / {by_name[n]['top1']:.2f}" if n in by_name else "" for n in names]
        lines.append(f"| `{v['version']}` | " + " | ".join(cells) + " |")
    return lines


def delta_section(rows):
    """Markdown for bench/eval/delta.py's results: per model, fine-tune and tier, B on its own,
    its deltas on A (at the tier's QP, and as the server stores them), the zstd baseline, and
    the pulls through weightcastd."""
    out = ["## Version deltas (P pictures on the version a device holds)", "",
           "Version B of each model is A fine-tuned further (Adam, lr 1e-4, batch 128): 300 steps, or one "
           "epoch (469 steps). Per tier: **B alone** is B coded on its own at that tier (bytes, top-1). "
           "**Δ at tier QP** codes B's picture layers as P pictures predicted from A's pictures at the tier's "
           "QP (B quantized with A's scales; other layers whole; common/pack/delta_codec). **Δ stored** is "
           "what the server stores for a version registered with `--base-version`: per layer the coarsest "
           "P-picture QP (the tier's, then 3, 6, 9, 12 below) whose SQNR against B's weights is at least that "
           "of B alone, used only when smaller than B alone. **zstd diff** is the baseline: zstd of the int8 "
           "difference between the same two reconstructions (B's delta-decoded values minus A's), i.e. the "
           "same update sent by a generic differ. Every delta was decoded against A's serialized layer and "
           "gave its recorded SHA-256 (bench/delta_eval fails otherwise). **Through weightcastd**: A and B "
           "(registered with `--base-version`) served; a device pulls A with `--base-dir`, then B (the bytes "
           "it received); a fresh device pulls B whole (A's layers sent along); both B files have the same "
           "SHA-256 (✓) and the top-1 given is theirs.", "",
           "| model | B | tier | A top-1 | B float top-1 | B alone bytes | top-1 | Δ at tier QP bytes | top-1 | "
           "zstd diff | Δ stored bytes (% of B alone) | top-1 | zstd diff | device with A receives | "
           "fresh device receives | same SHA-256 | top-1 |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = {v["qp_offset"]: v for v in r["deltas"]}
        same, stored, s = d["0"], d["m"], r["server"]
        out.append(f"| {r['model']} | {r['fine_tune']} | q{r['qp']} | {r['a_top1']:.2f} | {r['b_top1']:.2f} | "
                   f"{r['b_bytes']:,} | {r['intra_top1']:.2f} | {same['bytes']:,} | {same['top1']:.2f} | "
                   f"{same['zstd_diff_bytes']:,} | {stored['bytes']:,} ({pct(stored['bytes'], r['b_bytes'])}) | "
                   f"{stored['top1']:.2f} | {stored['zstd_diff_bytes']:,} | {s['delta_pull_bytes']:,} | "
                   f"{s['whole_pull_bytes']:,} | {'✓' if s['same_sha256'] else '✗'} | {s['top1']:.2f} |")
    return out + [""]


def progressive_section(results):
    """Markdown for bench/eval/progressive.py's results: per model and (coarse, final) pair, the
    first usable model and the final one of a progressive pull, against pulling the final tier."""
    limit = results["limit_mbit"]
    out = ["## Progressive delivery (a coarse tier first, then a refinement as P pictures)", "",
           f"The SDK's rate limit at {limit} Mbit/s (`weightcast pull --limit {limit}`), tiers encoded ahead. "
           "**Direct** pulls the final tier. **Progressive** (`--progressive COARSE`) pulls the refinement tier "
           "`COARSE+FINAL`: the server sends the coarse tier first (its picture layers, then the layers coded on "
           "their own), and the SDK writes that model as soon as every layer of it is verified (**first usable**; "
           "the file is byte-identical to a plain pull of the coarse tier: ✓); then the picture layers of the final "
           "tier coded as P pictures predicted from the coarse pictures, at the final QP or finer until each layer's "
           "SQNR reaches the final tier's coded alone (the final tier's own layer where that is smaller) (**final**). "
           "`budget-N` coarse tiers have the bytes of q37 with a QP per layer. Bytes are packed "
           "layer bytes, seconds are from the start of the pull (decode and file writes included), top-1 is "
           "measured in PyTorch on the 10,000 test images. The refined model is not bit-identical to the "
           "direct one (another coding of the same weights at the same QP), so its top-1 is given separately.", "",
           "| model | coarse → final | direct bytes | s | top-1 | first usable bytes | s | top-1 | = coarse pull | "
           "final bytes (vs direct) | s | top-1 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        out.append(f"| {r['model']} | {r['coarse']} → {r['final']} | {r['direct_bytes']:,} | {r['direct_seconds']:.2f} | "
                   f"{r['direct_top1']:.2f} | {r['coarse_bytes']:,} | {r['coarse_seconds']:.2f} | {r['coarse_top1']:.2f} | "
                   f"{'✓' if r['coarse_is_plain_pull'] else '✗'} | {r['refined_bytes']:,} "
                   f"({r['refined_bytes'] / r['direct_bytes'] * 100 - 100:+.1f} %) | {r['refined_seconds']:.2f} | "
                   f"{r['refined_top1']:.2f} |")
    return out + [""]


def section_of(old, heading, until):
    """The lines of OLD from HEADING to the next UNTIL (exclusive), trailing blank lines dropped."""
    start = old.find(heading)
    if start < 0:
        return []
    end = old.find(until, start + len(heading))
    lines = old[start:end if end >= 0 else len(old)].rstrip("\n").split("\n")
    return lines


def body(lines):
    """LINES without carried-over notes and leading blank lines."""
    lines = [line for line in lines if not line.startswith(("*Not rerun in the latest run",
                                                            "*Not regenerated in the latest run"))]
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def carried_over(old, heading):
    """The section of the previous document starting at HEADING (to the next "## "), under a note
    naming the run it came from; nothing when it has none."""
    start = old.find(heading)
    if start < 0:
        return []
    end = old.find("\n## ", start + 1)
    section = old[start:end if end >= 0 else len(old)].rstrip("\n").split("\n")
    note = "*Not regenerated in the latest run:"
    if not any(line.startswith(note) for line in section):
        date = re.search(r"Generated by `scripts/eval` \((\d{4}-\d{2}-\d{2})", old)
        section[1:1] = ["", f"{note} carried over from the run of {date.group(1) if date else 'an earlier date'}, "
                            "made with the codec of that day (before per-row scales and x265 RDOQ).*"]
    return section + [""]


def main():
    results_path, docs = sys.argv[1:3]
    delta_path = sys.argv[3] if len(sys.argv) > 3 else None
    progressive_path = sys.argv[4] if len(sys.argv) > 4 else None
    results, runs = {}, []
    for path in results_path.split(","):
        with open(path) as f:
            part = json.load(f)
        run = part.pop("_run", None)
        if run:
            runs.append((run, list(part)))
        results.update(part)
    old_doc = os.path.join(docs, "EVALUATION.md")
    old = open(old_doc).read() if os.path.exists(old_doc) else ""
    old_date = (re.search(r"Generated by `scripts/eval` \((\d{4}-\d{2}-\d{2})", old) or
                re.search(r"carried over from the run of (\d{4}-\d{2}-\d{2})", old))
    old_date = old_date.group(1) if old_date else "an earlier date"
    stale = [m for m in re.findall(r"^## (\S+)$", old, re.M) if m not in results and m != "Summary"]
    stale_note = (f"*Not rerun in the latest run: carried over from the run of {old_date}, made with the codec of "
                  "that day (before per-row scales and x265 RDOQ).*")
    images = os.path.join(docs, "eval")
    os.makedirs(images, exist_ok=True)
    generated = (f"Generated by `scripts/eval` ({datetime.date.today().isoformat()}, {platform.machine()}, "
                 f"{os.cpu_count()} cores); every number below comes from that run: do not edit by hand.")
    if runs:
        generated = ("Generated by `scripts/eval`; every number below comes from the run(s) named: do not edit by "
                     "hand. " + " ".join(
                         f"{', '.join(models)}: commit {run['commit'][:10]}"
                         f"{' with uncommitted changes' if run['uncommitted_changes'] else ''}, tiers measured "
                         f"{run['start']} to {run['end']} ({platform.machine()}, {run['cores']} cores, loaded: other "
                         f"sessions were compiling and testing; 5-minute load average {run['load_average_start'][1]:.1f} "
                         f"at the start, {run['load_average_end'][1]:.1f} at the end)." for run, models in runs) +
                     " Loading changes times, not bytes or accuracy.")
    out = ["# Evaluation: accuracy per tier on Fashion-MNIST", "", generated, "",
           "How it was measured: `bench/eval/evaluate.py` trains four models on the Fashion-MNIST training set "
           "(deterministic seeds, cached; `mobilenet` is trained with batch norm and registered with it folded "
           "into its convolutions), starts `weightcastd`, registers each model with an evaluation bundle "
           "(TorchScript module + the 10,000 test images), lets the server encode every tier, pulls every tier "
           "with the `weightcast` CLI as a float state_dict and measures top-1/top-2 on the 10,000 test images in "
           "PyTorch, with the *output cosine*: the mean over the test images of the cosine between the pulled model's "
           "logits and the float model's (the label-free figure an embedding model would be judged by). "
           "*worst SQNR (all layers)* is the lowest weight SQNR of any coded layer, picture or int8, as the server "
           "reports it. *server top-1* is the figure the server measured itself with libtorch on the same images "
           "(what `weightcast tiers` shows and `--max-accuracy-drop` selects on). Bytes are packed layer bytes as "
           "streamed. Baselines: *Quant (int8, raw)* is the server's per-tensor symmetric int8 uncompressed; "
           "*int8 + zstd* is the `lossless` tier; *requant + zstd* requantizes the same picture layers' int8 with one "
           "uniform step and compresses with zstd level 3, the step chosen as the finest that fits in the bytes "
           "those layers take at the HEVC tier named. `budget-N` tiers give each picture layer its own QP "
           "(equal-slope allocation over measured per-layer rate/SQNR curves, distortion = sum of per-layer "
           "noise-to-signal ratios; see common/pack/rate_allocation.h) to fit N bytes, N being the bytes of a "
           "uniform tier.", "",
           "Without an evaluation bundle the server knows SQNR only; accuracy columns are then empty.", "",
           "## Summary", ""]
    for model, entry in results.items():
        for v in entry["variants"]:
            for label, rows in (("tier of the uniform ladder", v["tiers"]), ("tier of any kind", v["tiers"] + v.get("budget_tiers", []))):
                if label != "tier of the uniform ladder" and not v.get("budget_tiers"):
                    continue
                best = best_within(entry, rows)
                if best:
                    out.append(f"- **{model}** ({v['version']}): the smallest {label} within {LOSS_POINTS} point of "
                               f"float top-1 ({entry['float']['top1']:.2f} %) is `{best['name']}`: {best['bytes']:,} "
                               f"bytes = {pct(best['bytes'], entry['float_bytes'])} of float32, top-1 "
                               f"{best['top1']:.2f} % ({best['top1'] - entry['float']['top1']:+.2f}).")
                else:
                    out.append(f"- **{model}** ({v['version']}): no {label} within {LOSS_POINTS} point of float top-1.")
    for model in stale:
        out += [line + f" *(run of {old_date}, not rerun)*" if not line.endswith("not rerun)*") else line
                for line in old.split("\n") if line.startswith(f"- **{model}** (")]
    out += ["", "Issue 21's goals: the smallest tier of any kind (every layer policy and front end measured) within "
            f"{LOSS_POINTS} point of float top-1, as % of float32 bytes, each from a real pull measured in PyTorch:", ""]
    for model, entry in results.items():
        rows = [t for v in entry["variants"] for t in v["tiers"] + v.get("budget_tiers", [])]
        best = best_within(entry, rows)
        share = 100 * best["bytes"] / entry["float_bytes"] if best else None
        goal = GOALS.get(model)
        verdict = ("no goal set" if goal is None else
                   f"goal ≤ {goal:.1f} %: {'met' if share is not None and share <= goal else 'not met'}")
        version = next(v["version"] for v in entry["variants"] for t in v["tiers"] + v.get("budget_tiers", [])
                       if t is best) if best else ""
        out.append(f"- **{model}**: " + (f"`{best['name']}` ({version}), {best['bytes']:,} bytes = {share:.2f} % of "
                                          f"float32, top-1 {best['top1']:.2f} % ({best['top1'] - entry['float']['top1']:+.2f})"
                                          if best else "no tier within reach") + f"; {verdict}.")
    for model in stale:
        out.append(f"- **{model}**: not measured in the latest run (goal ≤ {GOALS.get(model, 0):.1f} %).")
    out += ["", "For comparison, the seed paper sent VGG16's FC layers at QP 30 for about 7 % of the float model "
            "with 0.6 point top-1 loss (ImageNet).", ""]
    out += ["", "### Uniform QP vs a QP per layer at equal bytes", "",
            "| model / policy | uniform tier | bytes | top-1 % | `budget` tier bytes | top-1 % | Δ top-1 | "
            "requant + zstd bytes | top-1 % |", "|---|---|---|---|---|---|---|---|---|"]
    for model, entry in results.items():
        out += [line.replace("| ", f"| {model} / ", 1) for line in equal_bytes(entry)]
    carried = [line for model in stale for line in old.split("\n") if line.startswith(f"| {model} / ")]
    if carried:
        out += carried + ["", f"Rows for {', '.join(stale)}: run of {old_date} (not rerun)."]
    for model, entry in results.items():
        if len({v.get("front_end", "auto") for v in entry["variants"]}) > 1:
            float_top1 = entry["float"]["top1"]
            out += ["", f"### {model}: int8 front ends (per-tensor scales vs auto)", "",
                    f"{entry['title']}. The same ladder and budget tiers registered twice: with per-tensor int8 "
                    "scales for every layer (`\"scheme\": \"per-tensor\"` in the layer policy: weightcast before "
                    "issue 21) and with the default front end (auto: per layer, per-tensor or per-row scales, "
                    "whichever codes it better; common/pack/front_end.h). The picture layers are the 1x1 convolutions "
                    "of >= 4096 weights; the stem, depthwise convolutions, the first 1x1 and the classifier stay int8 + "
                    f"zstd. Float top-1: {float_top1:.2f} %, {entry['float_bytes']:,} bytes. *drop* is top-1 minus "
                    "float top-1 (points); *worst SQNR* is over every coded layer; *per-row layers* counts the int8 "
                    "and picture layers given per-row scales.", ""]
            out += front_end_table(entry)
        elif len(entry["variants"]) > 1:
            out += ["", f"### {model}: the same tiers under each layer policy", "",
                    "The tier names the QP of the picture layers that follow the tier; `conv-qpNN` codes the "
                    "convolution layers as HEVC pictures at their own QP NN in every HEVC tier, `conv-tier` at the "
                    "tier's QP, `fc` keeps them int8 + zstd. (`lossless` is int8 + zstd for every layer.) Float "
                    f"top-1: {entry['float']['top1']:.2f} %, {entry['float_bytes']:,} bytes.", ""]
            out += variants_side_by_side(entry)
    for model in stale:
        section = section_of(old, f"### {model}: ", "\n#")
        if section:
            last_row = max(i for i, line in enumerate(section) if line.startswith("|"))
            out += [""] + section[:2] + [stale_note, ""] + body(section[2:last_row + 1])
    disagree = [(m, v["version"], t["name"]) for m, e in results.items() for v in e["variants"]
                for t in v["tiers"] + v.get("budget_tiers", []) if abs(t["top1"] - t["server_top1"]) > 0.011]
    out += ["", f"Server-measured top-1 vs PyTorch on the pulled float checkpoint: "
            f"{'identical (to 0.01 point) for every tier' if not disagree else 'differ for ' + str(disagree)}.", ""]
    for model, entry in results.items():
        out += [f"## {model}", "", entry["title"] + ".", ""]
        for v in entry["variants"]:
            out += [f"### policy `{v['version']}`: {v['policy']}", "", table(entry, v), ""]
        accuracy_plot(model, entry, os.path.join(images, f"{model}_accuracy.png"))
        sqnr_plot(model, entry, os.path.join(images, f"{model}_sqnr.png"))
        out += [f"![{model}: accuracy vs bytes](eval/{model}_accuracy.png)", "",
                f"![{model}: SQNR vs bits/weight per layer](eval/{model}_sqnr.png)", ""]
    for model in stale:
        section = section_of(old, f"## {model}\n", "\n## ")
        out += section[:2] + [stale_note, ""] + body(section[2:]) + [""]
    if delta_path:
        with open(delta_path) as f:
            out += delta_section(json.load(f))
    else:
        out += carried_over(old, "## Version deltas")
    if progressive_path:
        with open(progressive_path) as f:
            out += progressive_section(json.load(f))
    else:
        out += carried_over(old, "## Progressive delivery")
    # Written by hand (bench/eval/accuracy_tiers.py's runs): kept as it is.
    start = old.find("## Accuracy tiers")
    if start >= 0:
        end = old.find("\n## ", start + 1)
        out += old[start:end if end >= 0 else len(old)].rstrip("\n").split("\n") + [""]
    with open(os.path.join(docs, "EVALUATION.md"), "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
