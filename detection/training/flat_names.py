"""DetectionModule's flat argument names from before issue 20, read into their groups.

Configs, command lines and checkpoints written before the optimisation and evaluation
arguments were grouped hold them flat (``model.lr``); they are read here as the grouped ones
(``model.optimization.lr``) with a deprecation note naming both. A flat name given beside the
same field of its group is an error rather than a silent choice.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

from detection.core.errors import InvalidInputError
from detection.training.options import EvaluationOptions, OptimizationOptions

GROUPS: dict[str, type] = {"optimization": OptimizationOptions, "evaluation": EvaluationOptions}
# Flat name -> its group ("lr" -> "optimization"); the field keeps its name inside the group.
FLAT_NAMES = {
    field.name: group for group, kind in GROUPS.items() for field in dataclasses.fields(kind)
}


def _twice(name: str, source: str | None = None, prefix: str = "") -> InvalidInputError:
    grouped = f"{prefix}{FLAT_NAMES[name]}.{name}"
    return InvalidInputError(source, f"given twice: flat and as {grouped}", field=prefix + name)


def group_options(groups: Mapping[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    """The typed groups DetectionModule runs with, the flat names of `flat` moved into them.

    Args:
        groups: ``{"optimization": ..., "evaluation": ...}``, each the typed options, a mapping
            (Lightning rebuilds the module from a checkpoint's plain hyper-parameters) or None.
        flat: the flat names given (an old checkpoint's ``lr``...); each moves with a
            DeprecationWarning.

    Returns:
        ``{group: OptimizationOptions | EvaluationOptions}``.

    Raises:
        TypeError: a name that is neither an argument nor a flat name.
        InvalidInputError: a flat name whose group field is also set, an unknown field in a
            group, or a value out of its range.
    """
    unknown = sorted(set(flat) - set(FLAT_NAMES))
    if unknown:
        raise TypeError(f"DetectionModule got an unexpected keyword argument {unknown[0]!r}")
    typed = {}
    for group, kind in GROUPS.items():
        given = groups.get(group)
        if isinstance(given, kind):
            default = kind()
            options = given
            set_fields = {
                name for name, value in vars(given).items() if value != vars(default)[name]
            }
        else:
            values = dict(given or {})
            try:
                options, set_fields = kind(**values), set(values)
            except TypeError as err:
                raise InvalidInputError(None, str(err), field=group) from err
        moved = {name: value for name, value in flat.items() if FLAT_NAMES[name] == group}
        for name in moved:
            if name in set_fields:
                raise _twice(name)
            warnings.warn(
                f"{name} is deprecated: set {group}.{name} instead",
                DeprecationWarning,
                stacklevel=3,
            )
        typed[group] = dataclasses.replace(options, **moved)
    return typed


def grouped_settings(
    model: Mapping[str, Any], source: str | None = None
) -> tuple[dict[str, Any], list[str]]:
    """A config's model section with its flat names moved into the groups; `source` (a file)
    is named in the error.

    Returns:
        (the section, the flat names moved in the order given).

    Raises:
        InvalidInputError: a flat name beside the same field of its group.
    """
    section = {key: value for key, value in model.items() if key not in FLAT_NAMES}
    moved = [key for key in model if key in FLAT_NAMES]
    for name in moved:
        group = FLAT_NAMES[name]
        fields = dict(section.get(group) or {})
        if name in fields:
            raise _twice(name, source, prefix="model.")
        section[group] = {**fields, name: model[name]}
    return section, moved


def grouped_config(config: Any, source: str | None = None) -> tuple[Any, list[str]]:
    """A parsed config file or checkpoint hyper-parameters object with the flat model names
    moved: its ``model`` section, or that of each subcommand (``fit: model: ...``).

    Returns:
        (the config, the names moved); a config without flat names comes back as it is.

    Raises:
        InvalidInputError: a flat name beside the same field of its group, naming `source`.
    """
    if not isinstance(config, Mapping):
        return config, []
    out, moved = dict(config), []
    for key, value in config.items():
        if key == "model" and isinstance(value, Mapping):
            out[key], names = grouped_settings(value, source)
        elif isinstance(value, Mapping) and isinstance(value.get("model"), Mapping):
            out[key], names = grouped_config(value, source)
        else:
            continue
        moved += names
    return (out, moved) if moved else (config, [])


def grouped_words(words: list[str]) -> tuple[list[str], list[str]]:
    """Command-line words with ``--model.lr`` (and ``--model.lr=...``) rewritten as
    ``--model.optimization.lr``; (the words, the names moved)."""
    out, moved = [], []
    for word in words:
        option, sep, value = word.partition("=")
        name = option.removeprefix("--model.")
        if option.startswith("--model.") and name in FLAT_NAMES:
            word = f"--model.{FLAT_NAMES[name]}.{name}{sep}{value}"
            moved.append(name)
        out.append(word)
    return out, moved


def moved_note(source: str, moved: list[str], prefix: str = "model.") -> str:
    """The one line telling the user which flat names of `source` were read as which."""
    pairs = ", ".join(f"{prefix}{name} -> {prefix}{FLAT_NAMES[name]}.{name}" for name in moved)
    return f"note: {source}: deprecated flat names read into their groups: {pairs}"


def model_setting(model: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """A setting of a model section or of a checkpoint's hyper-parameters in either layout:
    grouped (``optimization: {lr: ...}``) or flat as before issue 20 (``lr: ...``)."""
    group = model.get(FLAT_NAMES[name]) if name in FLAT_NAMES else None
    if isinstance(group, Mapping) and name in group:
        return group[name]
    if dataclasses.is_dataclass(group):
        return getattr(group, name)
    return model.get(name, default)
