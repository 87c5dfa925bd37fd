"""Validate a candidate recipe version before it is activated: replay the reviewed parts of the
history through the candidate and through the version the line runs now, side by side.

Both run the real inspection path (``station.vision.evaluate``: preprocess → analyse → decide)
on the archived raw views, judged against the reviewers' labels: detection, false reject,
escape and review rates per image and per part, image and part AUROC (the ranking, whatever the
thresholds), confusion by class (what each truly-labelled class became: pass, review, or a
rejected class), latency per stage. When the candidate's record (``<recipe>-v<N>.record.json``
in the models directory, `station train --from-history`) names the parts it was trained on, only
the other parts are judged, and of those only the parts the active version was not trained on
either, when its own record says (a candidate activated earlier): the comparison is on parts
neither has seen. When there are none the report says whose figures are on training parts
(optimistic). Every validation is stored (``recipe_validations``, audited) for the HMI's recipe
page.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

from station.recipe import LoadedRecipe, Recipe, load_recipe

COMPARED = ("detection_rate", "false_reject_rate", "escape_rate", "review_rate", "defective_review_rate",
            "part_detection_rate", "part_false_reject_rate", "part_escape_rate", "part_review_rate", "type_accuracy",
            "auroc", "part_auroc")
RANKINGS = ("auroc", "part_auroc")  # shown as 0.000-1.000: how well the scores rank defective above good, any threshold


class ValidationError(ValueError):
    """The validation cannot run (unknown version, no reviewed parts, models missing); says why."""


def recipe_changes(old: Recipe | None, new: Recipe) -> list[str]:
    """What activating ``new`` in place of ``old`` changes, one line each, for people."""
    if old is None:
        return [f"{new.name} v{new.version} becomes the recipe (there is none now)"]
    out = [f"version {old.version} -> {new.version}"]
    a, b = old.model_dump(mode="json", exclude={"version"}), new.model_dump(mode="json", exclude={"version"})
    if a.get("vision") != b.get("vision"):
        va, vb = a["vision"], b["vision"]
        for key in sorted(set(va) | set(vb)):
            if va.get(key) != vb.get(key):
                if key == "proposals":
                    out.append("proposal models: " + ", ".join(e["model"] for e in va.get(key) or []) + " -> "
                               + ", ".join(e["model"] for e in vb.get(key) or []))
                else:
                    out.append(f"vision.{key}: {va.get(key)} -> {vb.get(key)}")
    for key in ("min_confidence", "review_at", "time_budget_ms", "mm_per_px", "good_class", "plc_id"):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)} -> {b.get(key)}")
    ca, cb = {c["name"]: c for c in a["classes"]}, {c["name"]: c for c in b["classes"]}
    for name in sorted(set(ca) | set(cb)):
        if name not in ca or name not in cb:
            out.append(f"class {name}: {'added' if name in cb else 'removed'}")
        elif ca[name] != cb[name]:
            diffs = [f"{k} {ca[name].get(k)} -> {cb[name].get(k)}" for k in sorted(set(ca[name]) | set(cb[name]))
                     if ca[name].get(k) != cb[name].get(k)]
            out.append(f"class {name}: " + ", ".join(diffs))
    rest = {k for k in set(a) | set(b) if a.get(k) != b.get(k)} - {"vision", "classes", "min_confidence", "review_at",
                                                                    "time_budget_ms", "mm_per_px", "good_class", "plc_id"}
    out += [f"{k} changed" for k in sorted(rest)]
    return out if len(out) > 1 else out + ["nothing else (the same rules and models)"]


def confusion(results, good_class: str) -> dict[str, dict[str, int]]:
    """Per labelled class (the truth), what the images became: "pass", "review" or the rejected class."""
    table: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        became = (r.top_class or "reject") if r.rejected else ("review" if r.reviewed else "pass")
        table[r.truth][became] += 1
    return {truth: dict(c) for truth, c in sorted(table.items(), key=lambda kv: (kv[0] != good_class, kv[0]))}


def _run(loaded: LoadedRecipe, rows, models_dir: Path, backend: str, threads: int) -> dict:
    from station.inference.metadata import ModelError
    from station.models_store import pull
    from station.recipe_models import recipe_models
    from station.vision.evaluate import evaluate
    from station.vision.inspector import build_inspector

    try:
        for name in recipe_models(loaded.recipe).names:
            pull(name, models_dir)
        inspector = build_inspector(loaded, models_dir, backend=backend, threads=threads)
    except (ModelError, ValueError) as exc:
        raise ValidationError(f"{loaded.recipe.name} v{loaded.recipe.version} cannot run here: {exc}") from None
    metrics, results = evaluate(inspector, loaded, rows, "part")
    out = {key: metrics.get(key) for key in COMPARED}
    out.update(images=metrics["images"], parts=metrics.get("parts", 0), defective_parts=metrics.get("defective_parts", 0),
               good_parts=metrics.get("good_parts", 0), skipped=metrics["skipped"], latency_ms=metrics["latency_ms"],
               confusion=confusion(results, loaded.recipe.good_class))
    return out


def validate_candidate(name: str, version: int, *, db_url: str, archive_dir: Path, recipes_dir: Path, models_dir: Path,
                       actor: str, since: dt.datetime | None = None, until: dt.datetime | None = None,
                       station_id: str | None = None, backend: str = "onnxruntime", threads: int = 0) -> dict:
    """Replay the reviewed parts of ``name`` through stored version ``version`` and the recipe
    file in ``recipes_dir`` (the active one); store and return the report. Raises ValidationError."""
    from station.db.engine import make_engine
    from station.db.labels import LabelStore
    from station.db.migrate import upgrade
    from station.db.recipe_versions import RecipeVersions
    from station.db.training_set import write_manifest
    from station.vision.dataset import read_manifest

    engine = make_engine(db_url)
    try:
        upgrade(engine)
        versions = RecipeVersions(engine)
        stored = versions.get(name, version)
        if stored is None:
            raise ValidationError(f"no stored version {version} of recipe {name!r} in {engine.url.render_as_string(hide_password=True)}")
        path = Path(recipes_dir) / f"{name}.toml"
        candidate = load_recipe(path, text=stored.content)
        active = load_recipe(path) if path.is_file() else None
        parts = LabelStore(engine).reviewed_parts(name, since=since, until=until, station_id=station_id)
        if not parts:
            raise ValidationError(f"no reviewed part of {name} in the history: label parts in the review queue first")
        trained_on = _trained_on(models_dir, name, version)
        active_saw = _trained_on(models_dir, name, active.recipe.version) if active is not None else set()
        unseen = [p for p in parts if p.inspection_id not in trained_on]
        fair = [p for p in unseen if p.inspection_id not in active_saw]  # neither version trained on them
        judged = fair or unseen or parts
        if fair:
            note = (f"judged on {len(judged)} reviewed parts the candidate was not trained on"
                    + (f", nor the active v{active.recipe.version}" if active_saw else "")
                    + (f" ({len(parts) - len(fair)} {'either' if active_saw else 'it'} was trained on left out)"
                       if trained_on or active_saw else ""))
        elif unseen:
            note = (f"judged on {len(judged)} reviewed parts the candidate was not trained on; the active "
                    f"v{active.recipe.version} was trained on all of them: its figures are optimistic")
        else:
            note = f"judged on the {len(parts)} reviewed parts the candidate was trained on: its figures are optimistic"
        classes = sorted({c.name for c in candidate.recipe.classes} | ({c.name for c in active.recipe.classes} if active else set()))
        with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
            data = write_manifest(judged, archive_dir, Path(tmp), candidate.recipe.good_class, classes)
            if not data.rows:
                raise ValidationError("none of the reviewed parts can be replayed: " +
                                      "; ".join(f"inspection {i}: {why}" for i, why in data.left_out[:5]))
            rows = read_manifest(data.manifest)
            report = {"recipe": name, "note": note, "parts_judged": data.parts, "images_judged": data.rows,
                      "left_out": data.left_out, "trained_on_judged": len([p for p in judged if p.inspection_id in trained_on]),
                      "active_trained_on_judged": len([p for p in judged if p.inspection_id in active_saw]),
                      "candidate": {"version": version, **_run(candidate, rows, Path(models_dir), backend, threads)}}
            if active is not None:
                report["active"] = {"version": active.recipe.version, **_run(active, rows, Path(models_dir), backend, threads)}
        report["changes"] = recipe_changes(active.recipe if active else None, candidate.recipe)
        report["summary"] = summary_line(report)
        vid = versions.record_validation(name, (version, stored.content_hash),
                                         None if active is None else (active.recipe.version, active.content_hash),
                                         data.parts, actor, report)
        report["id"] = vid
        return report
    finally:
        engine.dispose()


def _trained_on(models_dir: Path, name: str, version: int) -> set[int]:
    """The inspections version ``version`` of ``name`` was trained on, from its record
    (``<name>-v<N>.record.json``, `station train --from-history`); none without one."""
    record = Path(models_dir) / f"{name}-v{version}.record.json"
    return set(json.loads(record.read_text())["history"]["trained_on"]) if record.is_file() else set()


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def summary_line(report: dict) -> str:
    """One line per version: its part-level rates (what the audit log and the CLI show)."""
    lines = []
    for key in ("active", "candidate"):
        m = report.get(key)
        if m is None:
            continue
        lines.append(f"{key} v{m['version']}: parts detection {_pct(m['part_detection_rate'])}, false reject "
                     f"{_pct(m['part_false_reject_rate'])}, escape {_pct(m['part_escape_rate'])}, review {_pct(m['part_review_rate'])}")
    return f"{report['recipe']} on {report['parts_judged']} reviewed parts ({report['note']}): " + "; ".join(lines)


ROWS = (("detection (images)", "detection_rate"), ("false reject (images)", "false_reject_rate"),
        ("escape (images)", "escape_rate"), ("review of good (images)", "review_rate"),
        ("review of defective (images)", "defective_review_rate"), ("detection (parts)", "part_detection_rate"),
        ("false reject (parts)", "part_false_reject_rate"), ("escape (parts)", "part_escape_rate"),
        ("review of good (parts)", "part_review_rate"), ("type accuracy", "type_accuracy"),
        ("ranking (image AUROC)", "auroc"), ("ranking (part AUROC)", "part_auroc"))


def table_rows(report: dict) -> list[tuple[str, str, str]]:
    """(what, active, candidate) rows of the side-by-side table, rates as percentages, latency in ms."""
    a, c = report.get("active") or {}, report["candidate"]
    def fmt(m: dict, key: str) -> str:
        v = m.get(key)
        return _pct(v) if key not in RANKINGS else "n/a" if v is None else f"{v:.3f}"

    rows = [(label, fmt(a, key) if a else "—", fmt(c, key)) for label, key in ROWS]
    for stage in ("analyse", "total"):
        la, lc = (a.get("latency_ms") or {}).get(stage), (c.get("latency_ms") or {}).get(stage)
        rows.append((f"latency {stage} p50 / p99", f"{la['p50']:.0f} / {la['p99']:.0f} ms" if la else "—",
                     f"{lc['p50']:.0f} / {lc['p99']:.0f} ms" if lc else "—"))
    return rows


__all__ = ["validate_candidate", "recipe_changes", "confusion", "table_rows", "summary_line", "ValidationError"]
