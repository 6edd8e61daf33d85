"""Experiment lifecycle rules, sans-I/O.

Status machine (CONTRACT.md)::

    draft --activate--> active --pause--> paused --activate--> active
    active | paused --complete--> completed   (terminal)

Asking for the state an experiment is already in is a no-op. Everything else
not drawn above is refused with a message saying why. Handlers feed the
current row to these functions and apply the decision; they never decide
transitions themselves.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from admin.errors import BadRequest

__all__ = [
    "Action",
    "Transition",
    "VariantCurrent",
    "check_activation",
    "check_api_kind_kept",
    "ensure_draft",
    "ensure_not_completed",
    "plan_archive",
    "plan_transition",
]


class Action(StrEnum):
    ACTIVATE = "activate"
    PAUSE = "pause"
    COMPLETE = "complete"


@dataclass(frozen=True)
class Transition:
    """What to do: ``noop`` when already there, else move to ``target``."""

    target: str
    noop: bool
    sets_started_at: bool = False
    sets_ended_at: bool = False


_TARGET = {Action.ACTIVATE: "active", Action.PAUSE: "paused", Action.COMPLETE: "completed"}
_ALLOWED_FROM = {
    Action.ACTIVATE: ("draft", "paused"),
    Action.PAUSE: ("active",),
    Action.COMPLETE: ("active", "paused"),
}
_REFUSALS = {
    (Action.ACTIVATE, "completed"): "a completed experiment cannot be activated again",
    (Action.PAUSE, "draft"): "only an active experiment can be paused",
    (Action.PAUSE, "completed"): "only an active experiment can be paused",
    (Action.COMPLETE, "draft"): "a draft experiment cannot be completed; delete it instead",
}


def plan_transition(status: str, action: Action) -> Transition:
    target = _TARGET[action]
    if status == target:
        return Transition(target=target, noop=True)
    if status not in _ALLOWED_FROM[action]:
        raise BadRequest(
            _REFUSALS.get((action, status), f"cannot {action.value} a {status} experiment")
        )
    return Transition(
        target=target,
        noop=False,
        # started_at is the first activation; a resume keeps it.
        sets_started_at=status == "draft",
        sets_ended_at=target == "completed",
    )


def plan_archive(status: str, is_archived: bool, archived: bool) -> bool:
    """True when the archive flag changes; refuses archiving an active experiment."""
    if archived and status == "active":
        raise BadRequest("an active experiment cannot be archived; pause or complete it first")
    return archived != is_archived


def ensure_draft(status: str, what: str) -> None:
    if status != "draft":
        raise BadRequest(f"{what} only while the experiment is a draft (it is {status})")


def ensure_not_completed(status: str, what: str) -> None:
    if status == "completed":
        raise BadRequest(f"{what} not on a completed experiment")


@dataclass(frozen=True)
class VariantCurrent:
    """A variant and the api kinds of its current and scheduled versions."""

    label: str
    has_current_version: bool
    api_kinds: frozenset[str]


def check_activation(variants: Sequence[VariantCurrent], is_archived: bool) -> None:
    """Guards of CONTRACT.md for draft/paused → active (uniqueness is the database's)."""
    if is_archived:
        raise BadRequest("an archived experiment cannot be activated; unarchive it first")
    if len(variants) < 2:
        raise BadRequest(f"activation needs at least 2 variants (it has {len(variants)})")
    missing = [v.label for v in variants if not v.has_current_version]
    if missing:
        raise BadRequest(
            f"activation needs a current version for every variant; missing: {_labels(missing)}"
        )
    kinds = frozenset().union(*(v.api_kinds for v in variants))
    if len(kinds) > 1:
        raise BadRequest(
            "all variants must share one upstream.api_kind; found " + ", ".join(sorted(kinds))
        )


def check_api_kind_kept(status: str, live_kinds: frozenset[str], new_kind: str) -> None:
    """A hot-swap on a live experiment must speak the api kind clients already use."""
    if status not in ("active", "paused") or not live_kinds:
        return
    if live_kinds != {new_kind}:
        raise BadRequest(
            f"upstream.api_kind must stay {', '.join(sorted(live_kinds))} while the experiment "
            f"is {status}"
        )


def _labels(labels: Iterable[str]) -> str:
    return ", ".join(repr(label) for label in labels)
