"""Markdown tables from a training record (``models/trained/<recipe>.record.json``).

    python -m station.models.train.report models/trained/magnetic-tile.record.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(v) -> str:
    return "–" if v is None else f"{v:.3f}"


def _class_table(per_class: dict, with_iou: bool) -> list[str]:
    cols = ["class", "images", "rejected", "detection / false reject", "type accuracy", *(["mean IoU"] if with_iou else []),
            "predicted as"]
    out = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for cls, e in per_class.items():
        rate = e.get("detection_rate", e.get("false_reject_rate"))
        iou = f"{_f(e.get('mean_iou'))} | " if with_iou else ""
        out.append(f"| {cls} | {e['images']} | {e['rejected']} | {_f(rate)} | {_f(e.get('type_accuracy'))} | "
                   f"{iou}{e.get('predicted_as', '')} |")
    return out


def report(record: dict) -> str:
    out = [f"## {record['recipe']}", "", f"Command: `{record.get('command') or 'station train …'}`", ""]
    d = record["data"]
    out.append(f"Data: {d['manifest']} (sha256 {d['manifest_sha256'][:12]}…), {d['used']} of {d['rows']} rows used, "
               f"grouped by {d['group_by'] or 'row'}; classes {d['class_counts']}")
    if "backbone" in record:  # analyzer "backbone": one trained head on a pulled backbone
        bb, hs = record["backbone"], record.get("head_settings", {})
        out += ["", f"Backbone: {bb['name']} (sha256 {bb['sha256'][:12]}…) at short side {bb['short_side']} px; per-cell "
                    f"logistic-regression head, C {hs.get('c')}, flip averaging {hs.get('flip_tta')}, edge margin "
                    f"{hs.get('edge_margin_cells')} cells"
                    + (f", outlines at {hs['outline_at_peak']} of each region's peak" if hs.get("outline_at_peak") else "")]
        nets = None
    elif "proposals" in record:  # entries {kind, opinion}, grouped by opinion
        groups: dict[int, list[str]] = {}
        for e in record["proposals"]:
            groups.setdefault(e["opinion"], []).append(e["kind"])
        nets = list(groups.values())
        nets = nets[0] if len(nets) == 1 else nets
        nets = nets[0] if isinstance(nets[0], str) and len(nets) == 1 else nets
    else:  # records written before the recipe's proposal entries
        nets = record.get("proposal_net", "pixel-mlp")
    if nets is not None:  # records written before the field existed: the classifier always named and dropped
        out += ["", f"Proposal nets: {_nets(nets)}; classifier role: "
                    f"{record.get('classifier_role', 'name-and-drop')}"]
    cv = record.get("cross_validation")
    if cv:
        keys = ["detection_rate", "false_reject_rate", "type_accuracy", "mean_iou", "part_detection_rate", "part_false_reject_rate",
                "auroc", "detection_at_1pct_false_reject"]
        out += ["", f"### Grouped {cv['folds']}-fold cross-validation (held-out folds)", "",
                "| fold | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for i, m in enumerate(cv["per_fold"], 1):
            out.append(f"| {i} | " + " | ".join(_f(m.get(k)) for k in keys) + " |")
        out.append("| pooled | " + " | ".join(_f(cv["pooled"].get(k)) for k in keys) + " |")
        out += ["", *_class_table(cv["pooled"]["per_class"], with_iou=True)]
        for key in ("operating_point_one_threshold", "operating_point", "operating_point_per_part"):
            fitted = cv.get(key)
            if not fitted:
                continue
            rates = ["detection_rate", "false_reject_rate", "type_accuracy", "part_detection_rate", "part_false_reject_rate"]
            out += ["", f"### Cross-fitted operating point: {fitted['rule']}", "",
                    "| fold | thresholds | " + " | ".join(rates) + " |", "|---" * (len(rates) + 2) + "|"]
            for i, (t, m) in enumerate(zip(fitted["thresholds"], fitted["per_fold"]), 1):
                shown = t if isinstance(t, (int, float)) else ", ".join(f"{c} {v:g}" for c, v in t.items())
                out.append(f"| {i} | {shown} | " + " | ".join(_f(m.get(k)) for k in rates) + " |")
            out.append("| pooled | | " + " | ".join(_f(fitted["pooled"].get(k)) for k in rates) + " |")
            out += _intervals(fitted["pooled"])
            out += ["", *_class_table(fitted["pooled"]["per_class"], with_iou=False)]
        lat = cv["pooled"]["latency_ms"]
        shown = ", ".join(f"{k} {v['p50']:.0f} / {v['p99']:.0f}" for k, v in lat.items())
        out += ["", "Latency ms (p50 / p99, this shared 2-core VM): " + shown]
    if record.get("operating_point"):
        out += ["", f"Operating point written to the recipe: min_confidence {record['operating_point']['min_confidence']} "
                    f"({record['operating_point']['chosen_on']}). The fold metrics above were measured at the recipe's "
                    "min_confidence before this update; the cross-fitted tables are the honest ones."]
    f = record["final"]
    models = ", ".join(f"{n} ({sha[:12]}…)" for n, sha in f["sha256"].items())  # proposals, then the classifier
    out += ["", f"Final models: {models}, trained on all rows at {record.get('trained_at', '?')}."]
    return "\n".join(out) + "\n"


def _intervals(m: dict) -> list[str]:
    """The pooled false-reject rates' Wilson 95 % intervals (records from before they existed: none)."""
    shown = [f"{k.replace('_ci95', '')} {_f(m[k][0])}-{_f(m[k][1])}" for k in ("false_reject_ci95", "part_false_reject_ci95") if m.get(k)]
    return ["", "95 % interval (Wilson) of the pooled " + ", ".join(shown)] if shown else []


def _nets(nets: str | list) -> str:
    """"a", ["a", "b"] (fused: "a + b") or [["a", "b"], ["c"]] (opinions: "a + b | c")."""
    if isinstance(nets, str):
        return nets
    if nets and isinstance(nets[0], list):
        return " | ".join(" + ".join(o) for o in nets) + " (each opinion fused; the surest counts)"
    return " + ".join(nets) + (" (fused)" if len(nets) > 1 else "")


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(report(json.loads(Path(path).read_text())))

