"""A NiceGUI form built from a pydantic model's schema (used for ``station.recipe.Recipe``).

Scalars become inputs (number, text, switch, select for ``Literal``), nested models become
sections, lists of models become repeatable cards with add / remove, and anything else
(dicts, lists of points, rectangles) a JSON text field. ``collect()`` gives back the plain
dict to validate; ``show_errors(problems)`` puts each validation message on its field.
"""

from __future__ import annotations

import json
import re
import types
import typing
from typing import Any, Literal, Union

from nicegui import ui
from pydantic import BaseModel

LAST_SEGMENT = re.compile(r"(\.[^.\[\]]+|\[\d+\])$")  # ".name" or "[3]" at the end of a path


def _unwrap(annotation) -> tuple[Any, bool]:
    """(inner annotation, optional) for ``X | None``."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _model_union(annotation) -> list[type[BaseModel]]:
    """The member models of a union of models (e.g. the recipe's vision settings, one per analyzer)."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = typing.get_args(annotation)
        if all(isinstance(a, type) and issubclass(a, BaseModel) for a in args):
            return list(args)
    return []


def _member_for(members: list[type[BaseModel]], tag_field: str | None, data: dict) -> type[BaseModel]:
    """The member whose tag (``Literal`` of ``tag_field``) is the data's; the first one otherwise."""
    for m in members:
        field = m.model_fields.get(tag_field or "")
        if field is not None and data.get(tag_field) in typing.get_args(field.annotation):
            return m
    return members[0]


def _model_list(annotation) -> type[BaseModel] | None:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item
    return None


class JsonField:
    """A text field holding JSON for values the form has no widget for."""

    def __init__(self, element, optional: bool):
        self.element = element
        self.optional = optional

    def value(self):
        text = (self.element.value or "").strip()
        if not text:
            return None if self.optional else ""
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None


class ModelForm:
    """Form for ``model`` filled from ``data`` (a dict as the model would dump it)."""

    def __init__(self, model: type[BaseModel], data: dict, *, mark_prefix: str = "r"):
        self.model = model
        self.mark_prefix = mark_prefix
        self.fields: dict[str, Any] = {}  # dotted path -> element (or JsonField)
        self.lists: dict[str, list] = {}  # dotted path -> [item paths]
        self.container = ui.column().classes("w-full gap-2")
        with self.container:
            self._build_model(model, data, "")

    # ---- building ------------------------------------------------------------------------
    def _mark(self, path: str) -> str:
        return f"{self.mark_prefix}-{path}" if path else self.mark_prefix

    def _build_model(self, model: type[BaseModel], data: dict, prefix: str) -> None:
        scalars = ui.row().classes("w-full gap-3 items-start")
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            # a file's dict names a field by its alias (e.g. a blob rule's "class"), a model dump by its name
            default = None if info.is_required() else info.get_default(call_default_factory=True)
            value = data.get(name, data.get(info.alias, default) if info.alias else default)
            annotation, optional = _unwrap(info.annotation)
            item_model = _model_list(annotation)
            members = _model_union(annotation)
            if members:  # a tagged union: the form of the member the data is (switching kinds: upload a file)
                data_now = value.model_dump() if isinstance(value, BaseModel) else dict(value or {})
                annotation = _member_for(members, info.discriminator, data_now)
                value = data_now
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                with ui.expansion(name.replace("_", " ").capitalize(), value=False).classes("w-full text-lg") \
                        .style("background:#111827").mark(self._mark(path)):
                    self._build_model(annotation, value.model_dump() if isinstance(value, BaseModel) else value or {},
                                      f"{path}.")
            elif item_model is not None:
                self._build_list(item_model, name, [v.model_dump() if isinstance(v, BaseModel) else v
                                                    for v in (value or [])], path)
            else:
                with scalars:
                    self.fields[path] = self._scalar(annotation, optional, value, name, info.description, path)

    def _build_list(self, item_model: type[BaseModel], name: str, items: list[dict], path: str) -> None:
        with ui.column().classes("w-full gap-2 p-2 rounded").style("border:1px solid #374151"):
            ui.label(name.replace("_", " ").capitalize()).classes("text-xl font-bold")
            box = ui.column().classes("w-full gap-2")
            self.lists[path] = []
            counter = iter(range(10**9))  # item paths stay unique after removals

            def add(values: dict) -> None:
                item_path = f"{path}[{next(counter)}]"
                with box:
                    with ui.card().classes("w-full p-2").style("background:#1f2937") as card:
                        self._build_model(item_model, values, f"{item_path}.")
                        ui.button("Remove", on_click=lambda: remove(item_path, card)).props("flat color=red") \
                            .mark(self._mark(f"{item_path}.remove"))
                self.lists[path].append(item_path)

            def remove(item_path: str, card) -> None:
                self.lists[path].remove(item_path)
                for key in [k for k in self.fields if k.startswith(item_path + ".")]:
                    del self.fields[key]
                card.delete()

            for values in items:
                add(values)
            ui.button(f"Add {name.rstrip('s')}", on_click=lambda: add({})).props("outline") \
                .mark(self._mark(f"{path}.add"))

    def _scalar(self, annotation, optional: bool, value, name: str, description: str | None, path: str):
        label = name.replace("_", " ")
        mark = self._mark(path)
        origin = typing.get_origin(annotation)
        if origin is Literal:
            options = list(typing.get_args(annotation))
            el = ui.select(options, value=value, label=label).props("outlined dark").classes("w-48")
        elif annotation is bool:
            el = ui.switch(label, value=bool(value))
        elif annotation is int:
            el = ui.number(label, value=value, format="%d", step=1).props("outlined dark").classes("w-48")
            el._form_int = True  # noqa: SLF001 (read in collect)
        elif annotation is float:
            el = ui.number(label, value=value).props("outlined dark").classes("w-48")
        elif annotation is str:
            el = ui.input(label, value=value or "").props("outlined dark").classes("w-64")
        else:  # dicts, tuples, lists of points: JSON
            text = "" if value is None else json.dumps(value)
            el = ui.input(f"{label} (JSON)", value=text).props("outlined dark").classes("w-96")
            el.mark(mark)
            if description:
                el.tooltip(description)
            return JsonField(el, optional)
        el.mark(mark)
        if description:
            el.tooltip(description)
        el._form_optional = optional  # noqa: SLF001 (read in collect)
        return el

    # ---- reading back ----------------------------------------------------------------------
    def collect(self) -> tuple[dict, list[tuple[str, str]]]:
        """(data, problems): the nested dict for validation and the fields that could not be read."""
        data: dict = {}
        problems: list[tuple[str, str]] = []
        for path, field in self.fields.items():
            try:
                if isinstance(field, JsonField):
                    value = field.value()
                else:
                    value = field.value
                    if isinstance(value, float) and value.is_integer() and getattr(field, "_form_int", False):
                        value = int(value)
                    if getattr(field, "_form_optional", False) and value in (None, ""):
                        value = None
            except ValueError as exc:
                problems.append((path, str(exc)))
                continue
            if value is None:
                continue  # absent: the model's default applies
            _put(data, path, value)
        for path, items in self.lists.items():
            # renumber after removals so indices are dense
            values = [_get(data, p) or {} for p in items]
            _drop(data, path)
            _put(data, path, values)
        return data, problems

    def element(self, path: str):
        field = self.fields.get(path)
        return field.element if isinstance(field, JsonField) else field

    def clear_errors(self) -> None:
        for path in self.fields:
            el = self.element(path)
            if hasattr(el, "error"):
                el.error = None

    def show_errors(self, problems: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Put messages on their fields; returns those that belong to no single field."""
        unplaced = []
        for path, message in problems:
            target = self._find(path)
            if target is not None and hasattr(target, "error"):
                target.error = message
            else:
                unplaced.append((path, message))
        return unplaced

    def _find(self, path: str):
        # validation counts list items densely; the form's item paths keep their first index
        for list_path, items in self.lists.items():
            for dense, item_path in enumerate(items):
                if path == f"{list_path}[{dense}]" or path.startswith(f"{list_path}[{dense}]."):
                    path = item_path + path[len(f"{list_path}[{dense}]"):]
                    break
        # errors may point inside a value (zones[0].rect.2): use the longest known prefix
        while path:
            if path in self.fields:
                return self.element(path)
            tail = LAST_SEGMENT.search(path)
            path = path[: tail.start()] if tail else ""
        return None


def _split(path: str) -> list:
    out: list = []
    for part in path.split("."):
        while "[" in part:
            head, rest = part.split("[", 1)
            if head:
                out.append(head)
            idx, part = rest.split("]", 1)
            out.append(int(idx))
        if part:
            out.append(part)
    return out


def _put(data: dict, path: str, value) -> None:
    keys = _split(path)
    node: Any = data
    for key, nxt in zip(keys, keys[1:]):
        if isinstance(key, int):
            while len(node) <= key:
                node.append({})
            node = node[key]
        else:
            node = node.setdefault(key, [] if isinstance(nxt, int) else {})
    last = keys[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append({})
        node[last] = value
    else:
        node[last] = value


def _get(data: dict, path: str):
    node: Any = data
    for key in _split(path):
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _drop(data: dict, path: str) -> None:
    keys = _split(path)
    node: Any = data
    for key in keys[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict):
        node.pop(keys[-1], None)
