"""What approvers see of a held call's arguments (gateway.approvals.arguments)."""

from __future__ import annotations

from gateway.approvals.arguments import (
    HIDDEN,
    MAX_ITEMS,
    MAX_STRING,
    SUMMARY_CHARS,
    approver_view,
    argument_summary,
)


def test_financial_and_personal_values_are_shown_in_full_so_the_call_can_be_judged() -> None:
    arguments = {"payment_id": "p-17", "amount": 120.5, "to": ["ann@example.com", "attacker@evil.example"],
                 "memo": {"note": "refund", "tags": ["a", "b"]}}
    assert approver_view(arguments, ["financial", "pii"]) == arguments


def test_secrets_are_hidden_by_data_class_key_and_value_shape() -> None:
    assert approver_view({"name": "db", "value": "hunter2"}, ["secrets"]) == {"name": HIDDEN, "value": HIDDEN}
    shown = approver_view({"user": "ann", "password": "hunter2", "nested": {"apiKey": "k", "ok": 1},
                           "header": "Bearer abcdefgh"}, ["internal"])
    assert shown == {"user": "ann", "password": HIDDEN, "nested": {"apiKey": HIDDEN, "ok": 1}, "header": HIDDEN}


def test_nothing_is_cut_silently() -> None:
    shown = approver_view({"body": "x" * (MAX_STRING + 10), "items": list(range(MAX_ITEMS + 3))}, [])
    assert shown["body"].endswith("[... 10 more characters not shown]")
    assert shown["items"][-1] == "[3 more items not shown]" and len(shown["items"]) == MAX_ITEMS + 1


def test_no_arguments_is_none() -> None:
    assert approver_view(None, []) is None


def test_everything_under_a_secret_looking_key_is_hidden_whatever_its_shape() -> None:
    shown = approver_view({"password": ["hunter2"], "token": {"value": "abc"}, "user": "ann"}, [])
    assert shown == {"password": HIDDEN, "token": HIDDEN, "user": "ann"}


def test_the_inbox_summary_tells_two_calls_apart_and_keeps_secrets_hidden() -> None:
    one = argument_summary(approver_view({"amount": 120, "to": "acme", "token": "t0ps3cret"}, ["financial"]))
    other = argument_summary(approver_view({"amount": 75, "to": "acme", "token": "t0ps3cret"}, ["financial"]))
    assert one == 'amount=120, to="acme", token=[hidden]' and other == 'amount=75, to="acme", token=[hidden]'
    assert "t0ps3cret" not in one


def test_the_inbox_summary_stays_one_short_line() -> None:
    summary = argument_summary({"body": "x" * 500, "items": list(range(50)), "nested": {"a": {"b": 1}}, "more": 1,
                                "and": "more", "still": "more values", "last": "one"})
    assert len(summary) <= SUMMARY_CHARS and summary.endswith("…") and "\n" not in summary
    assert argument_summary({}) == "(no arguments)" and argument_summary(None) == ""
