"""GenICam features from a recipe, written through GenApi: values checked against each node's
type, range, increment and access mode; trigger modes set up the SFNC way, with a fallback.

Nothing here raises for a device-side problem: a missing node or a refused value is reported,
and the camera keeps running (station/camera/genicam.py raises a warning alarm from the report).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from genicam.genapi import EAccessMode

# Geometry is written first, in this order: the pixel format changes the payload, and the
# offsets go to 0 before Width/Height so a larger size fits, then to their own value.
GEOMETRY_FEATURES = ("PixelFormat", "Width", "Height", "OffsetX", "OffsetY")
TRIGGER_FEATURES = ("TriggerSelector", "TriggerMode", "TriggerSource", "TriggerActivation", "TriggerSoftware")
# Nodes the adapter drives itself; a recipe setting them would fight it.
ADAPTER_OWNED = TRIGGER_FEATURES + ("AcquisitionStart", "AcquisitionStop", "AcquisitionAbort", "TLParamsLocked")


@dataclass(frozen=True)
class FeatureReport:
    """What happened to each recipe feature: written, absent on the device, or refused by it."""

    applied: dict[str, object] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    trigger_requested: str = "software"
    trigger_effective: str = "software"
    trigger_note: str = ""

    def problems(self) -> list[str]:
        out = [f"feature {name!r} does not exist on the device" for name in self.missing]
        out += [f"feature {name!r} refused: {why}" for name, why in self.refused.items()]
        if self.trigger_note:
            out.append(self.trigger_note)
        return out


def _access_writable(node) -> bool:
    return node.get_access_mode() in (EAccessMode.RW, EAccessMode.WO)


def _node(node_map, name: str):
    """The typed GenApi node called ``name``, or None when the device has no such node."""
    try:
        if not node_map.has_node(name):
            return None
        return getattr(node_map, name)
    except Exception:
        return None


def write_feature(node_map, name: str, value) -> tuple[str, object]:
    """Write one GenApi feature. Returns ("applied", read-back value), ("missing", None) or
    ("refused", reason). Never raises for a device-side problem."""
    node = _node(node_map, name)
    if node is None:
        return "missing", None
    kind = type(node).__name__
    try:
        if not _access_writable(node):
            return "refused", f"not writable now (access mode {EAccessMode(node.get_access_mode()).name})"
        if kind == "ICommand":
            if value is True:
                node.execute()
                return "applied", True
            return "refused", "a command takes the value true"
        if kind == "IInteger":
            if isinstance(value, bool) or not float(value).is_integer():
                return "refused", f"{value!r} is not an integer"
            v = int(value)
            lo, hi = node.min, node.max
            if not lo <= v <= hi:
                return "refused", f"{v} outside [{lo}, {hi}]"
            inc = node.inc if hasattr(node, "inc") else 1
            if inc and (v - lo) % inc:
                return "refused", f"{v} is not {lo} + a multiple of {inc}"
            node.value = v
        elif kind == "IFloat":
            if isinstance(value, (bool, str)):
                return "refused", f"{value!r} is not a number"
            v = float(value)
            lo, hi = node.min, node.max
            if not lo <= v <= hi:
                return "refused", f"{v} outside [{lo}, {hi}]"
            node.value = v
        elif kind == "IEnumeration":
            symbolics = list(node.symbolics)
            if str(value) not in symbolics:
                return "refused", f"{value!r} is not one of {symbolics}"
            node.value = str(value)
        elif kind == "IBoolean":
            if not isinstance(value, bool):
                return "refused", f"{value!r} is not true/false"
            node.value = value
        elif kind == "IString":
            node.value = str(value)
        else:
            return "refused", f"node type {kind} cannot be set from a recipe"
        return "applied", node.value
    except Exception as exc:  # GenApi raises its own exception family for out-of-range, locked...
        return "refused", f"{type(exc).__name__}: {exc}".strip()


def apply_features(node_map, features: dict[str, object]) -> FeatureReport:
    """Write the recipe's features, geometry first; report those missing or refused."""
    applied, missing, refused = {}, [], {}
    if "OffsetX" in features or "Width" in features:
        write_feature(node_map, "OffsetX", 0)
    if "OffsetY" in features or "Height" in features:
        write_feature(node_map, "OffsetY", 0)
    ordered = [n for n in GEOMETRY_FEATURES if n in features] + [n for n in features if n not in GEOMETRY_FEATURES]
    for name in ordered:
        status, detail = write_feature(node_map, name, features[name])
        if status == "applied":
            applied[name] = detail
        elif status == "missing":
            missing.append(name)
        else:
            refused[name] = str(detail)
    return FeatureReport(applied=applied, missing=missing, refused=refused)


def _enum_has(node_map, name: str, symbolic: str) -> bool:
    node = _node(node_map, name)
    try:
        return node is not None and symbolic in node.symbolics
    except Exception:
        return False


def setup_trigger(node_map, mode: str, line: str) -> tuple[str, str]:
    """Put the device in ``mode`` ("software", "hardware", "freerun").

    Returns (effective mode, note); the note gives the reason for a fallback to free-run.
    """
    if mode != "freerun":
        lacking = [n for n in ("TriggerMode", "TriggerSource") if _node(node_map, n) is None]
        source = "Software" if mode == "software" else line
        if mode == "software" and _node(node_map, "TriggerSoftware") is None:
            lacking.append("TriggerSoftware")
        if not lacking and not _enum_has(node_map, "TriggerSource", source):
            lacking.append(f"TriggerSource={source}")
        if not lacking:
            if _enum_has(node_map, "TriggerSelector", "FrameStart"):
                write_feature(node_map, "TriggerSelector", "FrameStart")
            steps = [("TriggerSource", source), ("TriggerMode", "On")]
            if mode == "hardware" and _node(node_map, "TriggerActivation") is not None:
                steps.insert(1, ("TriggerActivation", "RisingEdge"))
            for name, value in steps:
                status, detail = write_feature(node_map, name, value)
                if status != "applied":
                    lacking.append(f"{name}={value} ({detail or status})")
                    break
            else:
                return mode, ""
        note = f"{mode} trigger unavailable (device lacks {', '.join(lacking)}); falling back to free-run"
    else:
        note = ""
    if _node(node_map, "TriggerMode") is not None:
        write_feature(node_map, "TriggerMode", "Off")
    if _enum_has(node_map, "AcquisitionMode", "Continuous"):
        write_feature(node_map, "AcquisitionMode", "Continuous")
    return "freerun", note
