"""The parts of a search-space file every task reads the same way: its ``training``, ``data``,
``latency`` and ``limits`` sections (typed values, ``nas.core.config``), its objectives, and the
mechanisms offered at a stage or position with their hyperparameters. Each task's loader
(``nas.tasks.*.space``) calls these with its own schema; ``nas.tasks.spacefile`` is the shell."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attention
from nas.core.architecture import NONE
from nas.core.config import LIMITS_SCHEMA, Checker, LatencySettings, LimitSettings, as_list, parse_section, yaml_float
from nas.core.space import Option, StageInfo

OBJECTIVES = ("accuracy", "latency", "params", "flops")


def parse_training(c: Checker, doc: Mapping, cls: type) -> Any:
    """The ``training`` section as ``cls`` (a task's training settings), with the rules between its
    start settings: ``init: baseline`` trains the baseline ``init_epochs`` first; ``init: pretrained``
    takes a ``checkpoint`` file or the published weights (``pretrained: true``), one of them."""
    raw = doc.get("training")
    training = cls(**parse_section(c, raw, cls.schema, "training", c.line(doc, "training")))
    raw = raw if isinstance(raw, Mapping) else {}
    if training.init == "baseline" and training.init_epochs < 1:
        c.add(
            "training.init_epochs",
            f"{training.init_epochs!r} is not allowed with init: baseline; expected the epochs the baseline is "
            "trained before the trials start from it (an integer >= 1)",
            c.line(raw, "init_epochs") or c.line(raw, "init"),
        )
    if training.confirm and training.confirm_max and training.confirm_max % training.confirm:
        c.add(
            "training.confirm_max",
            f"{training.confirm_max!r} is not allowed with confirm: {training.confirm}; expected a multiple of it "
            "(the race adds seeds in batches of confirm) or 0 (twice confirm)",
            c.line(raw, "confirm_max"),
        )
    if training.confirm_max and not training.confirm:
        c.add("training.confirm_max", "only with confirm >= 2 (the race's first batch)", c.line(raw, "confirm_max"))
    given = [k for k in ("checkpoint", "pretrained") if raw.get(k) not in (None, False)]
    if training.init == "pretrained" and len(given) != 1:
        c.add(
            "training.init",
            "pretrained needs one of checkpoint: <a weights file> or pretrained: true (the backbone's published "
            f"weights, downloaded); given: {', '.join(given) or 'neither'}",
            c.line(raw, "init"),
        )
    if training.init != "pretrained" and given:
        c.add(f"training.{given[0]}", f"only with init: pretrained (init is {training.init})", c.line(raw, given[0]))
    if not training.warm and training.insert_lr is not None:
        c.add(
            "training.insert_lr",
            f"only with init: baseline or pretrained (init is {training.init}); a trial from scratch has "
            "nothing but new parameters",
            c.line(raw, "insert_lr"),
        )
    return training


def parse_data(
    c: Checker, doc: Mapping, classes: Mapping[str, type], default: str, elsewhere: Mapping[str, str]
) -> Any:
    """The ``data`` section as the value of its source (``classes``: source -> settings class);
    ``elsewhere``: sources of other tasks -> which kind of data they are (named in the message)."""
    raw = doc.get("data") or {"source": default}
    if not isinstance(raw, Mapping):
        c.add("data", f"expected a mapping with 'source'; got {raw!r}", c.line(doc, "data"))
        return classes[default]()
    source = raw.get("source", default)
    if source not in classes:
        why = f" ({elsewhere[source]} data)" if isinstance(source, str) and source in elsewhere else ""
        c.add("data.source", f"{source!r} is not allowed{why}; one of {', '.join(classes)}", c.line(raw, "source"))
        return classes[default]()
    cls = classes[source]
    return cls(**parse_section(c, raw, cls.schema, "data"))


def parse_latency_limits(c: Checker, doc: Mapping, latency_cls: type = LatencySettings) -> tuple[Any, LimitSettings]:
    """The ``latency`` and ``limits`` sections (``latency_cls``: a task's own latency settings)."""
    latency = latency_cls(**parse_section(c, doc.get("latency"), latency_cls.schema, "latency", c.line(doc, "latency")))
    limits = LimitSettings(**parse_section(c, doc.get("limits"), LIMITS_SCHEMA, "limits", c.line(doc, "limits")))
    return latency, limits


def parse_objectives(c: Checker, doc: Mapping, metric: str) -> tuple[str, ...]:
    """The two objectives, the quality one first (stored as ``accuracy``; a task may call it by its
    metric, e.g. mAP50-95)."""
    raw = doc.get("objectives", ["accuracy", "latency"])
    values = ["accuracy" if v == metric else v for v in as_list(raw)]
    bad = [v for v in values if v not in OBJECTIVES]
    if bad or len(values) != 2 or len(set(values)) != 2 or "accuracy" not in values:
        c.add(
            "objectives",
            f"{raw!r} is not allowed; expected {metric} and one of latency, params, flops (e.g. [{metric}, latency])",
            c.line(doc, "objectives"),
        )
        return ("accuracy", "latency")
    return ("accuracy", next(v for v in values if v != "accuracy"))


def input_size(c: Checker, doc: Mapping, key: str, value: Any) -> tuple[int, int]:
    """``input_size`` as (height, width): an integer >= 8 or two of them."""
    v = as_list(value)
    if len(v) == 1:
        v = v * 2
    if len(v) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or x < 8 for x in v):
        c.add(key, f"{value!r} is not allowed; expected an integer >= 8 or [height, width]", c.line(doc, key))
        return (224, 224)
    return (v[0], v[1])


Placements = Callable[[Checker, str, Mapping, Any], list[str]]  # (checker, where, cfg, spec) -> placements


def parse_options(
    c: Checker, path: str, entry: Mapping, info: StageInfo, placements: Placements, where_text: Callable[[str], str]
) -> list[Option]:
    """The mechanisms offered in ``entry['mechanisms']`` at the stage or position ``info``, each with the
    values of its hyperparameters (checked at every channel count met there, at every placement that
    ``placements`` allows for it); ``where_text(placement)`` names the place in messages."""
    mechs = entry.get("mechanisms")
    mpath = f"{path}.mechanisms"
    if not isinstance(mechs, Mapping) or not mechs:
        c.add(
            mpath,
            f"expected a non-empty mapping of mechanism -> hyperparameter choices (use 'none' for no "
            f"attention); got {mechs!r}",
            c.line(entry, "mechanisms") or c.line(entry, "stage"),
        )
        return []
    options = []
    for mname, cfg in mechs.items():
        where, line = f"{mpath}.{mname}", c.line(mechs, mname)
        if mname == NONE:
            if cfg not in (None, {}):
                c.add(where, f"'none' takes no hyperparameters; got {cfg!r}", line)
            options.append(Option(NONE, (), (None,)))
            continue
        try:
            spec = attention.get_spec(str(mname))
        except attention.UnknownMechanismError:
            c.add(where, f"unknown mechanism {mname!r}; allowed: none, {', '.join(attention.MECHANISMS)}", line)
            continue
        if cfg is None:
            cfg = {}
        if not isinstance(cfg, Mapping):
            c.add(where, f"expected a mapping of hyperparameter -> value or list of values; got {cfg!r}", line)
            continue
        allowed = placements(c, where, cfg, spec)
        hparams = [_values(c, where, line, cfg, spec, h, info, allowed, where_text) for h in spec.hparams]
        for key in cfg:
            if key != "placement" and spec.find(str(key)) is None:
                known = ", ".join(f"{h.name} ({h.short})" for h in spec.hparams) or "none"
                c.add(
                    f"{where}.{key}",
                    f"unknown hyperparameter of {spec.name}; allowed: {known}, placement",
                    c.line(cfg, key),
                )
        if allowed:
            options.append(Option(spec.name, tuple(h for h in hparams if h is not None), tuple(allowed)))
    return options


def _values(
    c: Checker,
    where: str,
    line: int | None,
    cfg: Mapping,
    spec: attention.MechanismSpec,
    h: Any,
    info: StageInfo,
    placements: list[str],
    where_text: Callable[[str], str],
) -> tuple[str, tuple[Any, ...]] | None:
    """The values given for hyperparameter ``h`` (its default when none), each checked."""
    given = [k for k in cfg if k != "placement" and spec.find(str(k)) is h]
    key = given[0] if given else None
    values = as_list(cfg[key]) if key is not None else [h.default]
    hwhere = f"{where}.{key or h.name}"
    hline = c.line(cfg, key) if key is not None else line
    if not values:
        c.add(hwhere, f"empty list of choices; allowed: {h.describe()}", hline)
        return None
    if len(set(map(repr, values))) != len(values):
        c.add(hwhere, f"{values!r} lists a value twice", hline)
    if h.kind is float:
        values = [yaml_float(v) for v in values]
    good = []
    for v in values:
        try:
            good.append(h.coerce(spec.name, v))
        except attention.HyperparameterError:
            c.add(hwhere, f"{v!r} is not allowed; {h.describe()}", hline)
    for v in good:
        for place in placements:
            for ch in info.channels.get(place, []):
                for err in spec.problems(ch, **{h.name: v}):
                    if err.name == h.name:
                        default_note = "" if key is not None else " (the default)"
                        c.add(
                            hwhere,
                            f"{v!r}{default_note} is not allowed at {ch} channels ({where_text(place)}): {err.allowed}",
                            hline,
                        )
    return (h.name, tuple(good))


def parse_card_settings(
    file: str, raw: Mapping, data_classes: Mapping[str, type], default: str, training_cls: type
) -> tuple[Any, Any]:
    """The ``data`` and ``training`` sections of ``raw`` (an export's card, with a command's overrides) as
    a task's typed values; a SpaceError naming ``file`` lists every problem."""
    c = Checker(file)
    data = parse_data(c, raw, data_classes, default, {})
    training = parse_training(c, raw, training_cls)
    c.raise_if_any()
    return data, training


def sections_from_data(
    d: Mapping[str, Any], data_classes: Mapping[str, type], training_cls: type, latency_cls: type, where: str
) -> dict[str, Any]:
    """The typed sections of a space recorded as data (``SearchSpace.to_data``), checked as a space file's
    are (kinds, bounds, rules: a record edited by hand sizes nothing); a SpaceError names ``where``."""
    c = Checker(where)
    source = d["data"].get("source") if isinstance(d.get("data"), Mapping) else None
    if source not in data_classes:
        c.add("data.source", f"{source!r} is not allowed; one of {', '.join(data_classes)}")
        c.raise_if_any()

    def given(key: str) -> Any:  # a setting recorded as None is one the space left out
        section = d.get(key)
        return {k: v for k, v in section.items() if v is not None} if isinstance(section, Mapping) else section

    out = {}
    for key, cls in (("data", data_classes[source]), ("training", training_cls), ("latency", latency_cls)):
        out[key] = cls(**parse_section(c, given(key), cls.schema, key))
    out["limits"] = LimitSettings(**parse_section(c, given("limits"), LIMITS_SCHEMA, "limits"))
    c.raise_if_any()
    return out
