"""``report.md``: the numbers of ``report.json`` as tables, with the paper's numbers beside ours.

Paper numbers (NetDiffusion, Jiang et al., POMACS 2024) are only those we could source: the
average JSD over fields (Table 3), TSTR accuracy (Table 4, macro and micro task), and the
SYN/FIN counts of its synthetic traffic. Cells the paper does not give stay empty ("—").
"""

from __future__ import annotations

from pathlib import Path

from netdiffusion.dataset import atomic_write_bytes

PAPER = {
    "avg_jsd": 0.04,
    "tstr_accuracy": {"macro": 0.738, "micro": 0.262},
    "synthetic_tcp_flags_per_1024": {"syn": 68, "fin": 556},
}

SCENARIO_TITLES = {
    "train_real_test_real": "train real / test real",
    "train_synthetic_test_real": "train synthetic / test real (TSTR)",
    "train_real_test_synthetic": "train real / test synthetic (TRTS)",
}


def _f(v: object, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render(report: dict) -> str:
    """Markdown text of a report dict (NaN already replaced by None)."""
    sim = report["similarity"]
    meta = report["meta"]
    out = ["# NetDiffusion evaluation report", ""]
    out += [f"- real (held-out): `{meta['real']}` — {meta['flows']['real']} flows",
            f"- synthetic: `{meta['synthetic']}` — {meta['flows']['synthetic']} flows",
            f"- train: `{meta['train']}` — {meta['flows']['train']} flows",
            f"- first K = {meta['packets_k']} packets per flow; seed {meta['seed']}; "
            f"{meta.get('seconds', '?')} s", ""]

    out += ["## Statistical similarity (paper Table 3)", "",
            f"Mean over the {sim['overall'].get('fields')} observed nPrint fields (value = integer of the "
            "field's bits, absent = own category). Floor = two disjoint halves of the held-out real data; "
            "random = real header stacks with random bit values. Lower is better; the floor is the best "
            "achievable at this sample size.", ""]
    left_out = sim.get("classes_left_out") or {}
    out += [f"Classes compared (in both held-out real and synthetic data): {', '.join(sim.get('classes', [])) or 'none'}."
            + (" Left out: " + "; ".join(f"{c} ({why})" for c, why in left_out.items()) + "." if left_out else ""), ""]
    rows = []
    for name, key in (("synthetic vs real (ours)", "overall"), ("real vs real floor (halves)", "floor"),
                      ("train vs held-out real", "train_vs_real"), ("random bits vs real", "random_baseline")):
        d = sim[key]
        rows.append([name, d["jsd"], d["tvd"], d["hd"], d["protocol"]["jsd"], d["bits"]["jsd"]])
    rows.append(["NetDiffusion (paper)", PAPER["avg_jsd"], None, None, None, None])
    out += _table(["", "avg JSD", "avg TVD", "avg HD", "protocol JSD", "per-bit JSD"], rows)

    # no class compared (or no TCP packet in it): a table would only hold dashes, so one line says why
    nothing = "None: no class has both held-out real and synthetic flows (see Notes)."
    compared = bool(sim.get("classes"))
    flags = report["flow_stats"].get("tcp_flags_per_1024", {})
    if compared and any(v is not None for v in (flags.get("real") or {}).values()):
        out += ["### TCP flags per 1,024 TCP packets", ""]
        frows = [[f.upper().replace("ACKF", "ACK"), flags["real"].get(f), flags["synthetic"].get(f),
                  PAPER["synthetic_tcp_flags_per_1024"].get(f)] for f in flags["real"]]
        out += _table(["flag", "real", "synthetic (ours)", "synthetic (paper)"], frows)

    out += ["### Per class", ""]
    if sim["per_class"]:
        out += _table(["class", "JSD", "floor JSD", "random JSD", "TVD", "HD", "protocol JSD"],
                      [[c, r.get("jsd"), r.get("floor_jsd"), r.get("random_jsd"), r.get("tvd"), r.get("hd"),
                        r.get("protocol_jsd")] for c, r in sim["per_class"].items()])
    else:
        out += [nothing, ""]
    scored = [(k, r) for k, r in sim["per_field"].items() if r["jsd"] is not None]
    worst = sorted(scored, key=lambda kv: -kv[1]["jsd"])[:15]
    out += ["### Fields furthest from real (top 15 by JSD)", ""]
    if worst:
        out += _table(["field", "JSD", "floor JSD", "random JSD", "TVD", "HD"],
                      [[k, r["jsd"], r["floor_jsd"], r["random_jsd"], r["tvd"], r["hd"]] for k, r in worst])
    else:
        out += [nothing, ""]

    fs = report["flow_stats"]
    out += ["## Flow statistics (paper Table 11)", "",
            "TVD between real and synthetic distributions (numeric values binned on fixed edges).", ""]
    def centre(summary: dict) -> str:
        if "mode" in summary:
            return f"mode {summary['mode']} ({summary['mode_share']:.0%})"
        return _f(summary.get("mean"))

    if compared:
        out += _table(["statistic", "real (mean or mode)", "synthetic", "TVD", "floor TVD", "random TVD"],
                      [[n, centre(fs["real"][n]), centre(fs["synthetic"][n]), fs["tvd"][n], fs["floor_tvd"].get(n),
                        fs["random_tvd"].get(n)] for n in fs["tvd"]])
    else:
        out += [nothing, ""]

    out += ["## ML utility (paper Table 4)", "",
            "Accuracy on flattened nPrint features of the first K packets, tested on held-out real flows "
            "(TRTS: on synthetic flows). Micro = application, macro = service. The random-bits row keeps "
            "each training flow's header stack and length and randomises every header value, so it "
            "shows what presence and flow length alone reveal.", ""]
    util = report["utility"]
    models = meta["models"]
    for task in meta["tasks"]:
        rows = []
        for scenario, title in SCENARIO_TITLES.items():
            rows.append([title, *[util.get(scenario, {}).get(task, {}).get(m, {}).get("accuracy") for m in models],
                         PAPER["tstr_accuracy"][task] if scenario == "train_synthetic_test_real" else None])
        rand = report["random_baseline"].get("utility", {}).get(task, {})
        rows.append(["train random bits / test real", *[rand.get(m, {}).get("accuracy") for m in models], None])
        rows.append(["majority class", *[report["random_baseline"].get("chance_accuracy", {}).get(task)] * len(models),
                     None])
        out += [f"### {task} task", ""]
        out += _table(["scenario", *models, "paper (NetDiffusion TSTR)"], rows)

    mix = report.get("mixing") or {}
    curves = [(t, m, v) for t, ms in mix.items() if isinstance(ms, dict) for m, v in ms.items()]
    if curves:
        rates = list(curves[0][2])
        out += ["## Mixing real and synthetic training data (paper Fig. 4)", "",
                f"Constant training size ({mix.get('training_flows')} flows); column = share synthetic.", ""]
        out += _table(["task / model", *rates], [[f"{t} / {m}", *[v.get(r) for r in rates]] for t, m, v in curves])

    bal = report.get("class_balancing") or {}
    if bal.get("minority_classes"):
        out += ["## Class balancing with synthetic flows (paper Table 8)", "",
                f"Minority classes {', '.join(bal['minority_classes'])} topped up towards {bal['target_flows']} "
                "flows with synthetic flows (added: "
                + ", ".join(f"{c} +{n}" for c, n in bal["synthetic_added"].items()) + ").", ""]
        rows = []
        for m in models:
            if m in bal:
                rows.append([m, bal[m]["before"]["accuracy"], bal[m]["after"]["accuracy"],
                             bal[m]["before"]["balanced_accuracy"], bal[m]["after"]["balanced_accuracy"]])
        out += _table(["model", "accuracy before", "after", "balanced acc. before", "after"], rows)
    elif bal:
        out += ["## Class balancing", "", bal.get("note", ""), ""]

    var = report.get("variation") or {}
    if var.get("per_field"):
        out += ["## Generation variation (paper Appendix B)", "",
                "Mean pairwise normalised Hamming distance between flows of one class, per field "
                f"(first {var['packets']} packets). Near 0 = every generated flow looks the same.", ""]
        out += _table(["", "synthetic", "real"], [["mean over fields", var["mean"]["synthetic"], var["mean"]["real"]]])
        out += _table(["class", "synthetic", "real"],
                      [[c, r.get("synthetic"), r.get("real")] for c, r in var["per_class"].items()])

    memo = report.get("memorisation") or {}
    if memo:
        out += ["## Memorisation", "",
                "Share of flows whose address/port tuple or whole header sequence equals a training flow's, "
                "and nearest-neighbour normalised Hamming distance to the training flows.", ""]
        out += _table(["", "synthetic", "held-out real"], [
            ["tuple in train", memo["synthetic_tuple_in_train"], memo["real_tuple_in_train"]],
            ["header sequence in train", memo["synthetic_sequence_in_train"], memo["real_sequence_in_train"]],
            ["NN Hamming median", memo["nn_hamming_synthetic_to_train"]["median"],
             memo["nn_hamming_real_to_train"]["median"]],
            ["NN Hamming 5th pct.", memo["nn_hamming_synthetic_to_train"]["p05"],
             memo["nn_hamming_real_to_train"]["p05"]],
        ])
        out += [f"Share of synthetic flows closer to train than 95 % of held-out real flows: "
                f"{_f(memo['synthetic_closer_than_real_p05'])}", ""]

    figs = report.get("figures") or {}
    if figs:
        out += ["## Figures", ""]
        out += [f"![{name}]({path})" for name, path in figs.items()] + [""]
    if report.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in report["notes"]] + [""]
    return "\n".join(out)


def write_markdown(path: str | Path, report: dict) -> None:
    atomic_write_bytes(path, render(report).encode())
