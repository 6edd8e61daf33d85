"""Sans-I/O rules: the lifecycle state machine and request validation."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from admin.errors import BadRequest, NotFound
from admin.lifecycle import (
    Action,
    VariantCurrent,
    check_activation,
    check_api_kind_kept,
    plan_archive,
    plan_transition,
)
from admin.validation import (
    PUBLIC_MODEL_ID_RE,
    parse_experiment_create,
    parse_experiment_id,
    parse_variant_create,
    parse_variant_id,
    parse_version_create,
)

STATUSES = ["draft", "active", "paused", "completed"]
ALLOWED = {
    ("draft", Action.ACTIVATE): "active",
    ("paused", Action.ACTIVATE): "active",
    ("active", Action.PAUSE): "paused",
    ("active", Action.COMPLETE): "completed",
    ("paused", Action.COMPLETE): "completed",
}


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", list(Action))
def test_transition_table(status: str, action: Action) -> None:
    target = {Action.ACTIVATE: "active", Action.PAUSE: "paused",
              Action.COMPLETE: "completed"}[action]
    if status == target:
        assert plan_transition(status, action).noop
    elif (status, action) in ALLOWED:
        plan = plan_transition(status, action)
        assert (plan.target, plan.noop) == (ALLOWED[status, action], False)
    else:
        with pytest.raises(BadRequest):
            plan_transition(status, action)


def test_started_at_only_on_first_activation_and_ended_at_on_completion() -> None:
    assert plan_transition("draft", Action.ACTIVATE).sets_started_at
    assert not plan_transition("paused", Action.ACTIVATE).sets_started_at
    assert plan_transition("paused", Action.COMPLETE).sets_ended_at
    assert not plan_transition("active", Action.PAUSE).sets_ended_at


@given(st.lists(st.sampled_from(list(Action)), max_size=12))
def test_completed_is_terminal(actions: list[Action]) -> None:
    status = "draft"
    seen_completed = False
    for action in actions:
        try:
            plan = plan_transition(status, action)
        except BadRequest:
            continue
        if seen_completed:
            assert plan.noop and plan.target == "completed"
        status = plan.target
        seen_completed = seen_completed or status == "completed"


def test_archive_rules() -> None:
    with pytest.raises(BadRequest):
        plan_archive("active", False, True)
    assert plan_archive("paused", False, True)
    assert not plan_archive("draft", True, True)
    assert plan_archive("active", True, False) is True  # unarchiving is always allowed


def _variant(label: str, current: bool = True, kinds: tuple[str, ...] = ("messages",)
             ) -> VariantCurrent:
    return VariantCurrent(label, current, frozenset(kinds if current else ()))


def test_activation_guards() -> None:
    check_activation([_variant("a"), _variant("b")], is_archived=False)
    with pytest.raises(BadRequest, match="at least 2"):
        check_activation([_variant("a")], is_archived=False)
    with pytest.raises(BadRequest, match="'b'"):
        check_activation([_variant("a"), _variant("b", current=False)], is_archived=False)
    with pytest.raises(BadRequest, match="api_kind"):
        check_activation([_variant("a"), _variant("b", kinds=("responses",))],
                         is_archived=False)
    with pytest.raises(BadRequest, match="archived"):
        check_activation([_variant("a"), _variant("b")], is_archived=True)


def test_api_kind_kept_only_matters_while_live() -> None:
    check_api_kind_kept("draft", frozenset({"messages"}), "responses")
    check_api_kind_kept("active", frozenset({"messages"}), "messages")
    for status in ("active", "paused"):
        with pytest.raises(BadRequest):
            check_api_kind_kept(status, frozenset({"messages"}), "responses")


@given(st.text(max_size=60))
def test_malformed_ids_are_not_found_never_a_crash(text: str) -> None:
    for parse in (parse_experiment_id, parse_variant_id):
        with contextlib.suppress(NotFound):
            parse(text)


@given(st.from_regex(PUBLIC_MODEL_ID_RE, fullmatch=True), st.text(min_size=1, max_size=200))
def test_valid_experiment_bodies_parse(public_model_id: str, name: str) -> None:
    body = {"public_model_id": public_model_id, "name": name}
    if not name.strip() or "\x00" in name:
        with pytest.raises(BadRequest):
            parse_experiment_create(body)
    else:
        parsed = parse_experiment_create(body)
        assert (parsed.public_model_id, parsed.name, parsed.description) == (
            public_model_id, name, "")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                         max_size=3)))
def test_any_json_body_parses_or_is_a_bad_request(body: object) -> None:
    for parse in (parse_experiment_create, parse_variant_create,
                  lambda b: parse_version_create(b, allow_insecure=True)):
        try:
            parse(body)
        except BadRequest as exc:
            assert exc.status == 400


def test_weight_must_be_a_real_integer() -> None:
    assert parse_variant_create({"label": "a", "weight": 10_000}).weight == 10_000
    for weight in (True, False, 1.0, "2", None, 0, 10_001):
        with pytest.raises(BadRequest):
            parse_variant_create({"label": "a", "weight": weight})


def test_api_key_never_appears_in_validation_errors() -> None:
    secret = "sk-very-secret\x00"
    with pytest.raises(BadRequest) as exc:
        parse_version_create({"upstream": {"internal_id": "x",
                                           "base_url": "https://a.example",
                                           "api_kind": "messages"},
                              "api_key": secret}, allow_insecure=False)
    assert "sk-very-secret" not in exc.value.message
