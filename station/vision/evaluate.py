"""`station eval`: inspect every image of a manifest with a recipe and score the verdicts.

Metrics (defective = a row whose class is not the recipe's good class; verdicts are REJECT,
REVIEW — a finding in the recipe's review band, the part goes to a person — or PASS):
- ``detection_rate``: defective images rejected / defective images;
- ``false_reject_rate``: good images rejected / good images;
- ``escape_rate``: defective images neither rejected nor sent to review / defective images (what
  the line lets through); ``defective_review_rate``: defective images sent to review (so
  detection + defective review + escape = 1);
- ``review_rate``: good images sent to review / good images (the people's work it costs);
- ``type_accuracy``: defective images whose top defect has the right class / defective images;
- ``mean_iou``: IoU of the union of the found defect masks with the ground-truth mask, over
  defective images that have a non-empty mask;
- with ``group_by``: rows sharing a value are the views of one part; a part is rejected when
  any of its views is (the station's rule for several cameras or lights), else sent to review
  when any view is: ``part_detection_rate``, ``part_false_reject_rate``, ``part_escape_rate``,
  ``part_defective_review_rate`` and ``part_review_rate``;
- ``auroc`` of the image score (the most confident finding; 0 without one), defective vs good
  images; with ``group_by`` also ``part_auroc``: a part's score is the max over its views, a
  part is defective when any of its views is (the station rejects a part on any view);
- ``false_reject_ci95`` (and ``part_false_reject_ci95``): the Wilson 95 % interval of the false
  reject rate. A threshold set on ~100 good parts is noisy: 1 rejected of 100 is 0.2 %–5.4 %;
- per class, counts, skipped rows with reasons, per-stage latency p50/p99 (ms).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.stats import binomtest

from station.inspection import Outcome, View
from station.recipe import LoadedRecipe
from station.stages import inspect_views
from station.vision.dataset import Row, SkippedRow, group_of, load_sample, skip_summary


@dataclass
class ImageResult:
    row: Row
    group: str
    truth: str
    rejected: bool
    top_class: str | None
    iou: float | None
    reason: str
    timings_ms: dict[str, float]
    score: float = 0.0  # the most confident defect found (0: none), for operating-point analysis
    class_scores: dict[str, float] = field(default_factory=dict)  # most confident finding per class, any min_confidence
    reviewed: bool = False  # a REVIEW verdict (never together with rejected)


def _rate(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def wilson_interval(num: int, den: int, confidence: float = 0.95) -> list[float] | None:
    """[low, high] Wilson score interval of the rate ``num / den`` (None without trials)."""
    if den == 0:
        return None
    ci = binomtest(num, den).proportion_ci(confidence, method="wilson")
    return [float(ci.low), float(ci.high)]


def inspect_row(inspector, loaded: LoadedRecipe, row: Row, min_side_px: int) -> tuple[ImageResult | None, str | None]:
    """Inspect one manifest row as the line would (station.stages.inspect_views); (result, None)
    or (None, the reason it was skipped: unreadable, not inspectable, a model failing on it)."""
    recipe = loaded.recipe
    known = {c.name for c in recipe.classes} | {recipe.good_class}
    if row.label not in known:
        return None, f"class {row.label!r} is neither a recipe class nor the good class {recipe.good_class!r}"
    try:
        sample = load_sample(row, min_side_px)
    except ValueError as exc:
        return None, str(exc)
    view = View(camera=recipe.cameras[0].name, image=sample.image, source=str(row.image))
    insp = inspect_views(loaded, inspector, [view], sequence=row.index, part_id=row.index)
    if insp.failure is not None:  # not inspected: counted as skipped with its reason, the others continue
        return None, f"image {row.image}: {insp.failure.text}"
    verdict = insp.verdict
    iou = None
    if row.label != recipe.good_class and sample.mask is not None and sample.mask.any():
        pred = np.zeros(sample.mask.shape, bool)
        for d in insp.defects:
            if d.mask is not None and d.mask.shape == pred.shape:
                pred |= d.mask
        iou = float((pred & sample.mask).sum() / max(1, (pred | sample.mask).sum()))
    top = verdict.top_defect.class_name if verdict.top_defect is not None else None
    class_scores: dict[str, float] = {}
    for d in insp.defects:
        class_scores[d.class_name] = max(class_scores.get(d.class_name, 0.0), d.confidence)
    score = max(class_scores.values(), default=0.0)
    timings = {k: v for k, v in insp.timings_ms.items() if k != "total"}
    return ImageResult(row, "", row.label, verdict.outcome is Outcome.REJECT, top, iou, verdict.reason, timings, score,
                       class_scores, verdict.outcome is Outcome.REVIEW), None


def auroc(bad: np.ndarray, good: np.ndarray) -> float | None:
    """The probability that a defective item scores above a good one (ties count half); None
    without both kinds."""
    if not len(bad) or not len(good):
        return None
    return float((bad[:, None] > good[None, :]).mean() + 0.5 * (bad[:, None] == good[None, :]).mean())


def split_parts(results: list[ImageResult], good_class: str) -> tuple[list[list[ImageResult]], list[list[ImageResult]]]:
    """(defective parts, good parts), each part its views (``ImageResult.group``): a part is
    defective when any of its views is (the station rejects a part on any view)."""
    parts: dict[str, list[ImageResult]] = defaultdict(list)
    for r in results:
        parts[r.group].append(r)
    bad = [v for v in parts.values() if any(r.truth != good_class for r in v)]
    return bad, [v for v in parts.values() if all(r.truth == good_class for r in v)]


def part_auroc(results: list[ImageResult], good_class: str) -> float | None:
    """AUROC over parts (``split_parts``): a part scores the max over its views; None without
    both kinds of part."""
    return _parts_auroc(*split_parts(results, good_class))


def _parts_auroc(bad: list[list[ImageResult]], good: list[list[ImageResult]]) -> float | None:
    return auroc(np.array([max(r.score for r in v) for v in bad]), np.array([max(r.score for r in v) for v in good]))


def score_threshold(good: np.ndarray, max_false_reject: float = 0.01) -> float:
    """The lowest score threshold (reject when score > threshold) that rejects at most
    ``max_false_reject`` of the ``good`` scores (0.0 when there are none)."""
    allowed = int(np.floor(max_false_reject * len(good)))
    ranked = np.sort(np.asarray(good, dtype=float))[::-1]
    return float(ranked[allowed]) if allowed < len(ranked) else 0.0


def operating_point(results: list[ImageResult], good_class: str, max_false_reject: float = 0.01) -> dict:
    """AUROC of the image score (defective vs good), and the detection rate at the lowest score
    threshold that rejects at most ``max_false_reject`` of the good images (the baselines' metric;
    a threshold read off the same images it is applied to, so optimistic)."""
    bad = np.array([r.score for r in results if r.truth != good_class])
    good = np.array([r.score for r in results if r.truth == good_class])
    if not len(bad) or not len(good):
        return {}
    threshold = score_threshold(good, max_false_reject)
    return {"auroc": auroc(bad, good), "threshold_at_1pct_false_reject": threshold,
            "detection_at_1pct_false_reject": float((bad > threshold).mean()),
            "false_reject_at_threshold": float((good > threshold).mean())}


def threshold_for(results: list[ImageResult], good_class: str, max_false_reject: float = 0.01, per_part: bool = False) -> float:
    """The lowest score threshold (reject when score > threshold) that rejects at most
    ``max_false_reject`` of the good images and, with ``per_part``, also of the good parts (a
    part is rejected when any of its views is: with six lights per tile, 1 % per image can be
    6 % per part)."""
    good = [r for r in results if r.truth == good_class]
    candidates = [operating_point(results, good_class, max_false_reject).get("threshold_at_1pct_false_reject", 0.0)]
    if per_part:
        parts: dict[str, float] = defaultdict(float)
        for r in good:
            parts[r.group] = max(parts[r.group], r.score)
        candidates.append(score_threshold(np.array(list(parts.values())), max_false_reject))
    return float(max(candidates))


def at_thresholds(results: list[ImageResult], thresholds: dict[str, float], review: float | None = None) -> list[ImageResult]:
    """The results as if the recipe rejected exactly the images with a finding of class c scoring
    above ``thresholds[c]`` (that class's min_confidence just above it): rejected, and the top
    class with it (the most confident finding that counts); with ``review``, the images not
    rejected that have a finding above it are sent to review (its review_at just above it)."""
    out = []
    for r in results:
        over = {c: v for c, v in r.class_scores.items() if v > thresholds.get(c, 1.0)}
        top = max(over, key=over.get) if over else None
        doubtful = not over and review is not None and any(v > review for v in r.class_scores.values())
        out.append(replace(r, rejected=bool(over), top_class=top, reviewed=doubtful))
    return out


def review_threshold_for(results: list[ImageResult], good_class: str, thresholds: dict[str, float], max_escape: float,
                         per_part: bool = False) -> float:
    """The highest score threshold ``r`` (review when a finding scores above it) at which at most
    ``max_escape`` of the defective images not rejected at ``thresholds`` escape (no finding above
    r) and, with ``per_part``, of the defective parts too. A defective image with no finding at
    all escapes at any r: when they alone exceed the budget, r is 0 (every finding reviewed)."""
    judged = at_thresholds(results, thresholds)
    bad = [r for r in judged if r.truth != good_class]
    cap = min(thresholds.values(), default=1.0)  # at the reject threshold the band is empty

    def highest(scores: list[float], n: int) -> float:
        allowed = int(np.floor(max_escape * n + 1e-9))
        for c in sorted({s for s in scores if s < cap} | {0.0, cap}, reverse=True):
            if sum(s <= c for s in scores) <= allowed:
                return c
        return 0.0

    def best(r: ImageResult) -> float:
        return max(r.class_scores.values(), default=0.0)

    candidates = [highest([best(r) for r in bad if not r.rejected], len(bad))]
    if per_part:
        parts: dict[str, list[ImageResult]] = defaultdict(list)
        for r in bad:
            parts[r.group].append(r)
        left = [max(best(r) for r in v) for v in parts.values() if not any(r.rejected for r in v)]
        candidates.append(highest(left, len(parts)))
    return float(min(candidates))


def class_thresholds(results: list[ImageResult], good_class: str, classes: list[str], max_false_reject: float = 0.01) -> dict[str, float]:
    """Per-class thresholds that reject at most ``max_false_reject`` of the good images and as
    many defective images as a greedy search finds: start with every class above its highest
    good-image score, then repeatedly lower the class whose next step detects the most
    defective images per newly rejected good image, while the budget lasts."""
    good = [r for r in results if r.truth == good_class]
    bad = [r for r in results if r.truth != good_class]
    allowed = int(np.floor(max_false_reject * len(good)))
    steps = {c: sorted({r.class_scores[c] for r in good if c in r.class_scores} | {0.0}, reverse=True) for c in classes}
    level = dict.fromkeys(classes, 0)  # index into steps[c]: threshold = steps[c][level]

    def rejected(rs: list[ImageResult], t: dict[str, float]) -> int:
        return sum(any(v > t.get(c, 1.0) for c, v in r.class_scores.items()) for r in rs)

    t = {c: steps[c][0] for c in classes}
    while True:
        base_good, base_bad = rejected(good, t), rejected(bad, t)
        best, best_value = None, None
        for c in classes:
            if level[c] + 1 >= len(steps[c]):
                continue
            trial = {**t, c: steps[c][level[c] + 1]}
            cost, gain = rejected(good, trial) - base_good, rejected(bad, trial) - base_bad
            if base_good + cost > allowed or (cost and not gain):
                continue
            value = gain / (cost + 1e-3)
            if best_value is None or value > best_value:
                best, best_value = c, value
        if best is None:
            return t
        level[best] += 1
        t[best] = steps[best][level[best]]


def cross_fitted(folds: list[list[ImageResult]], good_class: str, grouped: bool, classes: list[str] | None = None,
                 max_false_reject: float = 0.01, per_part: bool = False, max_escape: float | None = None) -> dict:
    """Cross-validated rates at an operating point no fold chose for itself: fold k is judged at
    the threshold(s) that keep false rejects at ``max_false_reject`` on the good images of the
    *other* held-out folds: one threshold for all classes (with ``per_part``, on their good parts
    too: ``threshold_for``), or with ``classes`` one per class (``class_thresholds``). With
    ``max_escape``, also a review band chosen on the other folds: the highest review threshold at
    which at most that share of their defective images (and parts, with ``per_part``) escape
    (``review_threshold_for``). Returns per-fold and pooled metrics and the thresholds."""
    judged, per_fold, thresholds, reviews = [], [], [], []
    for k, mine in enumerate(folds):
        others = [r for j, f in enumerate(folds) if j != k for r in f]
        if classes:
            t = class_thresholds(others, good_class, classes, max_false_reject)
        else:
            one = threshold_for(others, good_class, max_false_reject, per_part)
            t = {c: one for r in others for c in r.class_scores} or {"": one}
        review = None if max_escape is None else review_threshold_for(others, good_class, t, max_escape, per_part)
        rs = at_thresholds(mine, t, review)
        judged += rs
        thresholds.append({c: round(v, 4) for c, v in sorted(t.items())})
        reviews.append(None if review is None else round(review, 4))
        m = summarise(rs, [], good_class, grouped)
        per_fold.append({key: m.get(key) for key in RATE_KEYS if key in m})
    pooled = summarise(judged, [], good_class, grouped)
    pooled.pop("skipped_rows", None)
    kind = "per-class thresholds" if classes else "one threshold"
    which = "good images and good parts" if per_part and not classes else "good images"
    rule = f"fold k judged at the {kind} that reject at most {max_false_reject:.0%} of the other folds' {which}"
    out = {"rule": rule, "thresholds": thresholds, "per_fold": per_fold, "pooled": pooled}
    if max_escape is not None:
        what = "defective images and parts" if per_part else "defective images"
        out["rule"] += (f", with the review band from the highest threshold at which at most {max_escape:.0%} of the other "
                        f"folds' {what} escape")
        out["review_thresholds"] = reviews
    return out


RATE_KEYS = ("detection_rate", "false_reject_rate", "escape_rate", "review_rate", "defective_review_rate", "type_accuracy",
             "mean_iou", "part_detection_rate", "part_false_reject_rate", "part_escape_rate", "part_review_rate",
             "part_defective_review_rate")


def summarise(results: list[ImageResult], skipped: list[SkippedRow], good_class: str, grouped: bool) -> dict:
    defective = [r for r in results if r.truth != good_class]
    good = [r for r in results if r.truth == good_class]
    ious = [r.iou for r in defective if r.iou is not None]
    out: dict = {
        "detection_rate": _rate(sum(r.rejected for r in defective), len(defective)),
        "false_reject_rate": _rate(sum(r.rejected for r in good), len(good)),
        "false_reject_ci95": wilson_interval(sum(r.rejected for r in good), len(good)),
        "escape_rate": _rate(sum(not r.rejected and not r.reviewed for r in defective), len(defective)),
        "defective_review_rate": _rate(sum(r.reviewed for r in defective), len(defective)),
        "review_rate": _rate(sum(r.reviewed for r in good), len(good)),
        "type_accuracy": _rate(sum(r.top_class == r.truth for r in defective), len(defective)),
        "mean_iou": float(np.mean(ious)) if ious else None,
        "images": len(results),
        "defective_images": len(defective),
        "good_images": len(good),
        "images_with_masks": len(ious),
        "skipped": len(skipped),
        "skipped_reasons": skip_summary(skipped),
        "skipped_rows": [{"row": s.row.index, "image": str(s.row.image), "reason": s.reason} for s in skipped],
    }
    out.update(operating_point(results, good_class))
    per_class = {}
    for cls in sorted({r.truth for r in results}):
        rs = [r for r in results if r.truth == cls]
        ci = [r.iou for r in rs if r.iou is not None]
        entry = {"images": len(rs), "rejected": sum(r.rejected for r in rs), "reviewed": sum(r.reviewed for r in rs)}
        if cls != good_class:
            entry["detection_rate"] = _rate(entry["rejected"], len(rs))
            entry["escape_rate"] = _rate(len(rs) - entry["rejected"] - entry["reviewed"], len(rs))
            entry["type_accuracy"] = _rate(sum(r.top_class == cls for r in rs), len(rs))
            entry["mean_iou"] = float(np.mean(ci)) if ci else None
            entry["predicted_as"] = dict(Counter(r.top_class or "none" for r in rs))
        else:
            entry["false_reject_rate"] = _rate(entry["rejected"], len(rs))
            entry["review_rate"] = _rate(entry["reviewed"], len(rs))
        per_class[cls] = entry
    out["per_class"] = per_class
    if grouped:
        bad_parts, good_parts = split_parts(results, good_class)
        out["part_detection_rate"] = _rate(sum(any(r.rejected for r in v) for v in bad_parts), len(bad_parts))
        out["part_false_reject_rate"] = _rate(sum(any(r.rejected for r in v) for v in good_parts), len(good_parts))

        def part_reviewed(v: list[ImageResult]) -> bool:  # no view rejects it, a view sends it to review
            return not any(r.rejected for r in v) and any(r.reviewed for r in v)

        out["part_escape_rate"] = _rate(sum(not any(r.rejected or r.reviewed for r in v) for v in bad_parts), len(bad_parts))
        out["part_defective_review_rate"] = _rate(sum(part_reviewed(v) for v in bad_parts), len(bad_parts))
        out["part_review_rate"] = _rate(sum(part_reviewed(v) for v in good_parts), len(good_parts))
        out["part_false_reject_ci95"] = wilson_interval(sum(any(r.rejected for r in v) for v in good_parts), len(good_parts))
        out["part_auroc"] = _parts_auroc(bad_parts, good_parts)
        out["parts"] = len(bad_parts) + len(good_parts)
        out["defective_parts"] = len(bad_parts)
        out["good_parts"] = len(good_parts)
    lat = defaultdict(list)
    for r in results:
        for k, v in r.timings_ms.items():
            lat[k].append(v)
        lat["total"].append(sum(r.timings_ms.values()))
    out["latency_ms"] = {k: {"p50": round(float(np.percentile(v, 50)), 2), "p99": round(float(np.percentile(v, 99)), 2)}
                         for k, v in lat.items()}
    return out


def evaluate(inspector, loaded: LoadedRecipe, rows: list[Row], group_by: str | None = None, min_side_px: int = 16,
             progress=None) -> tuple[dict, list[ImageResult]]:
    """Inspect ``rows`` and return (metrics, per-image results). Bad rows are skipped and counted."""
    recipe = loaded.recipe
    results, skipped = [], []
    for n, row in enumerate(rows, 1):
        group = group_of(row, group_by) if group_by else f"row{row.index}"
        result, why = inspect_row(inspector, loaded, row, min_side_px)
        if result is None:
            skipped.append(SkippedRow(row, why))
        else:
            result.group = group
            results.append(result)
        if progress:
            progress(n, len(rows))
    return summarise(results, skipped, recipe.good_class, bool(group_by)), results
