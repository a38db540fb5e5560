"""Score thresholds: the numbers a part passes or fails by, in one value type.

A `Thresholds` holds a default for every class and per-class values (typically calibrated on
validation). It is parsed from the command line (`0.6`, `scratch=0.4`), stored in checkpoints,
overridden by users and resolved to one value per label 1..K.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    import torch

DECISION_DEFAULT = 0.5  # score at which a detection fails a part when nothing else says
REPORT_DEFAULT = 0.05  # lowest score written to results, for review and re-thresholding
THRESHOLD_SYNTAX = "0.5 (every class) or CLASS=0.5 (one class)"


def threshold_problem(value: Any) -> str | None:
    """Why `value` cannot be a score threshold (scores lie in 0..1), or None when it can.

    A threshold above 1 would let its class pass every part; one below 0 fail every part.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number, got {value!r}"
    if not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    if not 0.0 <= value <= 1.0:
        return f"must lie in 0..1 (scores do), got {value!r}"
    return None


def check_report_threshold(value: float, what: str = "report_threshold") -> float:
    """`value` as a float when it is a score in 0..1, else a ValueError naming `what`."""
    problem = threshold_problem(value)
    if problem is not None:
        raise ValueError(f"{what} {problem}")
    return float(value)


@dataclass(frozen=True)
class Thresholds:
    """A default score threshold plus per-class ones (class name -> score that fails a part).

    ``default`` is None when nobody set it: resolution then uses DECISION_DEFAULT, and
    overriding a value with such a Thresholds keeps the overridden value's default.
    """

    default: float | None = None
    per_class: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = dict(self.per_class)
        if self.default is not None:
            values["(default)"] = self.default
        for name, value in values.items():
            problem = threshold_problem(value)
            if problem is not None:
                raise ValueError(f"score threshold of {name!r} {problem}")
        object.__setattr__(self, "per_class", {str(k): float(v) for k, v in self.per_class.items()})
        if self.default is not None:
            object.__setattr__(self, "default", float(self.default))

    # ------------------------------------------------------------------- making one

    @classmethod
    def coerce(cls, value: ThresholdsLike) -> Thresholds:
        """A Thresholds from a number (every class), a {class: value} mapping, command-line
        strings (``["0.6", "scratch=0.4"]``, as a recipe may hold them), None or itself."""
        if value is None:
            return cls()
        if isinstance(value, Thresholds):
            return value
        if isinstance(value, Mapping):
            return cls(per_class=value)
        if isinstance(value, list | tuple):
            return cls.parse(value) or cls()
        return cls(default=value)

    @classmethod
    def parse(cls, values: str | Iterable[str] | None) -> Thresholds | None:
        """Command-line values: '0.6' sets every class, 'scratch=0.4' one class; None if none."""
        if values is None:
            return None
        default: float | None = None
        named: dict[str, float] = {}
        for value in [values] if isinstance(values, str) else values:
            name, sep, number = str(value).rpartition("=")
            try:
                threshold = float(number)
            except ValueError:
                raise ValueError(f"--threshold '{value}': expected {THRESHOLD_SYNTAX}") from None
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"--threshold '{value}': a score threshold lies in 0..1")
            if not sep:
                default = threshold
            elif not name:
                raise ValueError(f"--threshold '{value}': expected {THRESHOLD_SYNTAX}")
            else:
                named[name] = threshold
        if default is None and not named:
            return None
        return cls(default, named)

    @classmethod
    def from_checkpoint(cls, meta: Mapping[str, Any]) -> Thresholds:
        """The thresholds stored in a checkpoint's metadata (see `to_checkpoint`)."""
        return cls(
            default=meta.get("score_threshold", DECISION_DEFAULT),
            per_class=meta.get("thresholds") or {},
        )

    def to_checkpoint(self) -> dict[str, Any]:
        """Checkpoint fields: calibrated per-class ``thresholds`` (None if none) and the default."""
        return {
            "thresholds": dict(self.per_class) or None,
            "score_threshold": self.fallback,
        }

    # ------------------------------------------------------------------- using one

    @property
    def fallback(self) -> float:
        """The threshold of a class without its own value."""
        return DECISION_DEFAULT if self.default is None else self.default

    def updated(self, override: ThresholdsLike) -> Thresholds:
        """These thresholds with ``override`` applied: a default given there replaces every
        value here; per-class values there replace those of their classes."""
        override = Thresholds.coerce(override)
        if override.default is not None:
            return override
        return Thresholds(self.default, {**self.per_class, **override.per_class})

    def resolve(self, class_names: Sequence[str]) -> dict[str, float]:
        """One threshold per class, in ``class_names`` order; unknown names are an error."""
        unknown = sorted(set(self.per_class) - set(class_names))
        if unknown:
            raise ValueError(
                f"thresholds name unknown classes {unknown}; known: {list(class_names)}"
            )
        return {name: self.per_class.get(name, self.fallback) for name in class_names}

    def resolved(self, class_names: Sequence[str]) -> Thresholds:
        """The same thresholds with a value for every class of ``class_names``."""
        return Thresholds(self.default, self.resolve(class_names))

    def per_label(self, class_names: Sequence[str]) -> list[float]:
        """Threshold of each label 1..K (index 0 is label 1)."""
        return list(self.resolve(class_names).values())

    def label_tensor(self, class_names: Sequence[str]) -> torch.Tensor:
        """Thresholds indexed by label, +inf at the background label 0 (never a defect)."""
        import torch

        return torch.tensor([math.inf, *self.per_label(class_names)], dtype=torch.float32)

    def lowest(self, class_names: Sequence[str], report_threshold: float) -> float:
        """The lowest score a model must return: every reported detection and every defect."""
        return min(float(report_threshold), *self.per_label(class_names))

    def report_value(self) -> float | dict[str, float]:
        """How a report shows the thresholds given: the per-class values, else the default."""
        return dict(self.per_class) if self.per_class else self.fallback


def add_threshold_argument(parser: argparse.ArgumentParser, default: str, *aliases: str) -> None:
    """The one ``--threshold VALUE|CLASS=VALUE`` option of every command; see `Thresholds.parse`."""
    parser.add_argument(
        "--threshold",
        *aliases,
        dest="threshold",
        action="append",
        metavar="VALUE|CLASS=VALUE",
        help=f"score at which a detection fails the part: {THRESHOLD_SYNTAX}, repeatable; {default}",
    )


ThresholdsLike = Union[Thresholds, float, Mapping[str, float], Sequence[str], None]  # noqa: UP007 - runtime alias
