"""Approval rules (approvals/rules.py): every field checked with the rule named, and the first fitting rule decides."""

import json
import os
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from approvals.rules import PolicyFileError, Rule, Subject, argument_text, policy_file_read, rule_match, rules_parse
from scripts.processes import ROOT


def rules(*definitions: dict) -> list[Rule]:
    return rules_parse({"rules": list(definitions)})


def tool_call(tool: str, agent: str = "coder", groups: frozenset[str] = frozenset(), **arguments) -> Subject:
    return Subject(kind="tool_call", agents=(agent,), tool=tool, arguments=arguments, groups=groups)


def test_the_first_fitting_rule_decides():
    policy = rules(
        {"name": "no rm", "match": {"tool": "shell", "arguments": {"cmd": "rm *"}}, "decision": "deny"},
        {"name": "shell asks", "match": {"tool": "shell"}, "decision": "ask", "quorum": 2},
        {"name": "reads", "match": {"tool": "read_*"}, "decision": "allow"},
    )
    assert rule_match(policy, tool_call("shell", cmd="rm -rf /")).name == "no rm"
    assert rule_match(policy, tool_call("shell", cmd="ls")).name == "shell asks"
    assert rule_match(policy, tool_call("read_file")).name == "reads"
    assert rule_match(policy, tool_call("Read_file")) is None  # globs are case-sensitive
    assert rule_match(policy, Subject(kind="plan", agents=("coder",))) is None


def test_a_plan_fits_an_agent_glob_when_every_subtask_agent_fits():
    policy = rules({"name": "llm plans", "match": {"kind": "plan", "agent": "llm*"}, "decision": "ask"})
    assert rule_match(policy, Subject(kind="plan", agents=("llm", "llm_short"))) is not None
    assert rule_match(policy, Subject(kind="plan", agents=("llm", "script"))) is None
    assert rule_match(policy, tool_call("x", agent="llm")) is None  # kind: plan only


def test_arguments_fit_as_text_or_compact_json_and_must_all_be_present():
    policy = rules({"name": "big", "match": {"arguments": {"n": "1?", "opts": '{"force":true*'}}, "decision": "deny"})
    assert rule_match(policy, tool_call("t", n=12, opts={"force": True, "x": 1})) is not None
    assert rule_match(policy, tool_call("t", n=12)) is None
    assert rule_match(policy, tool_call("t", n=2, opts={"force": True})) is None
    assert argument_text({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    assert argument_text("as is") == "as is"


def test_requester_group_fits_the_owners_groups():
    policy = rules({"name": "interns", "match": {"requester_group": "interns"}, "decision": "ask"})
    assert rule_match(policy, tool_call("t", groups=frozenset({"interns", "x"}))) is not None
    assert rule_match(policy, tool_call("t", groups=frozenset({"leads"}))) is None


def test_an_ask_rule_has_its_defaults_and_describes_itself():
    (rule,) = rules({"name": "a", "match": {}, "decision": "ask"})
    assert rule.describe() == {
        "name": "a",
        "match": {},
        "decision": "ask",
        "approvers": None,
        "quorum": 1,
        "separate_requester": None,
        "expires_after_s": None,
        "on_expiry": "reject",
    }
    (deny,) = rules({"name": "d", "match": {"tool": "x"}, "decision": "deny"})
    assert deny.describe() == {"name": "d", "match": {"tool": "x"}, "decision": "deny", "reason": "denied by policy d"}


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"match": {}, "decision": "ask"}, "rule 1: name: is required"),
        ({"name": "r", "match": {}, "decision": "maybe"}, 'rule "r": decision: must be one of allow, deny, ask'),
        ({"name": "r", "decision": "ask"}, 'rule "r": match: is required'),
        ({"name": "r", "match": {"tools": "x"}, "decision": "ask"}, 'rule "r": match.tools: is not a key of match'),
        ({"name": "r", "match": {"kind": "tool"}, "decision": "ask"}, 'rule "r": match.kind: must be one of'),
        ({"name": "r", "match": {"arguments": {"a": 1}}, "decision": "ask"}, 'rule "r": match.arguments.a: must be'),
        ({"name": "r", "match": {}, "decision": "ask", "quorum": 0}, 'rule "r": quorum: must be a whole number'),
        ({"name": "r", "match": {}, "decision": "ask", "quorum": True}, 'rule "r": quorum: must be a whole number'),
        (
            {"name": "r", "match": {}, "decision": "ask", "approvers": ["user:a"], "quorum": 2},
            'rule "r": quorum: can never be reached',
        ),
        ({"name": "r", "match": {}, "decision": "ask", "approvers": ["bob"]}, 'rule "r": approvers[0]: must be'),
        ({"name": "r", "match": {}, "decision": "allow", "quorum": 2}, 'rule "r": quorum: is for "ask" rules only'),
        ({"name": "r", "match": {}, "decision": "ask", "reason": "x"}, 'rule "r": reason: is for "deny" rules only'),
        ({"name": "r", "match": {}, "decision": "ask", "on_expiry": "wait"}, 'rule "r": on_expiry: must be one of'),
        ({"name": "r", "match": {}, "decision": "ask", "expires_after_s": 0}, 'rule "r": expires_after_s: must be'),
        ({"name": "r", "match": {}, "decision": "ask", "colour": 1}, 'rule "r": colour: is not a field of a rule'),
    ],
)
def test_a_bad_rule_is_named_with_its_field(definition, message):
    with pytest.raises(PolicyFileError) as raised:
        rules_parse({"rules": [definition]}, where="APPROVALS_POLICY_FILE p.json")
    assert str(raised.value).startswith(f"APPROVALS_POLICY_FILE p.json: {message}"), str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_bad_document_or_file_says_what_is_wrong(tmp_path):
    with pytest.raises(PolicyFileError, match=r'must be a JSON object \{"rules": \[...\]\}'):
        rules_parse([])
    with pytest.raises(PolicyFileError, match='rule "a": name: another rule has this name'):
        rules_parse({"rules": [{"name": "a", "match": {}, "decision": "allow"}] * 2})
    with pytest.raises(PolicyFileError, match=r"cannot be read \(No such file or directory\)"):
        policy_file_read(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PolicyFileError, match="is not valid JSON"):
        policy_file_read(str(tmp_path / "bad.json"))


@pytest.mark.processes
def test_a_bad_policy_file_stops_the_process_at_start_with_one_line(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"rules": [{"name": "deploys", "match": {}, "decision": "ask", "quorum": "2"}]}))
    env = {**os.environ, "APPROVALS_POLICY_FILE": str(path), "DJANGO_SECRET_KEY": "test"}
    done = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    line = f'APPROVALS_POLICY_FILE {path}: rule "deploys": quorum: must be a whole number from 1 to 100'
    assert line in done.stderr.splitlines(), done.stderr[-2000:]


# --- The matcher against a plain reference ------------------------------------------------------

NAMES = st.sampled_from(["read_file", "write_file", "shell", "deploy", "llm", "coder", "a[b", "x*y"])
GLOBS = st.sampled_from(["*", "read_*", "shell", "?????", "[dw]*", "*e*", "llm", "co?er", "[!r]*", "x*y", "a[[]b"])
VALUES = st.one_of(
    NAMES, st.integers(-3, 30), st.booleans(), st.none(), st.lists(st.integers(0, 2), max_size=2), st.just({"a": 1})
)
GROUPS = st.sampled_from(["leads", "interns", "ops"])


@st.composite
def matches(draw) -> dict:
    match = {}
    if draw(st.booleans()):
        match["kind"] = draw(st.sampled_from(["plan", "tool_call"]))
    if draw(st.booleans()):
        match["agent"] = draw(GLOBS)
    if draw(st.booleans()):
        match["tool"] = draw(GLOBS)
    if draw(st.booleans()):
        match["arguments"] = draw(st.dictionaries(st.sampled_from(["cmd", "path", "n"]), GLOBS, min_size=1))
    if draw(st.booleans()):
        match["requester_group"] = draw(GROUPS)
    return match


@st.composite
def subjects(draw) -> Subject:
    kind = draw(st.sampled_from(["plan", "tool_call"]))
    if kind == "plan":
        agents = tuple(draw(st.lists(NAMES, min_size=1, max_size=3)))
        return Subject(kind="plan", agents=agents, groups=frozenset(draw(st.sets(GROUPS))))
    return Subject(
        kind="tool_call",
        agents=(draw(NAMES),),
        tool=draw(NAMES),
        arguments=draw(st.dictionaries(st.sampled_from(["cmd", "path", "n", "other"]), VALUES, max_size=3)),
        groups=frozenset(draw(st.sets(GROUPS))),
    )


def reference_glob(pattern: str, text: str) -> bool:
    """A glob written out by hand: *, ?, [...] with ! negation, everything else literal, whole text, case-sensitive."""
    regex, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            regex += ".*"
        elif char == "?":
            regex += "."
        elif char == "[":
            end = pattern.find("]", i + 2 if pattern[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end == -1:
                regex += re.escape(char)
            else:
                body = pattern[i + 1 : end]
                negate = body.startswith("!")
                body = body[1:] if negate else body
                regex += "[" + ("^" if negate else "") + "".join(re.escape(c) for c in body) + "]"
                i = end
        else:
            regex += re.escape(char)
        i += 1
    return re.fullmatch(regex, text, re.DOTALL) is not None


def reference_fits(match: dict, subject: Subject) -> bool:
    if "kind" in match and match["kind"] != subject.kind:
        return False
    if "agent" in match and not all(reference_glob(match["agent"], agent) for agent in subject.agents):
        return False
    if "tool" in match and not reference_glob(match["tool"], subject.tool):
        return False
    if "requester_group" in match and match["requester_group"] not in subject.groups:
        return False
    for name, pattern in match.get("arguments", {}).items():
        if name not in subject.arguments:
            return False
        value = subject.arguments[name]
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        if not reference_glob(pattern, text):
            return False
    return True


@settings(max_examples=400, deadline=None)
@given(
    definitions=st.lists(st.tuples(matches(), st.sampled_from(["allow", "deny", "ask"])), min_size=0, max_size=12),
    subject=subjects(),
)
def test_the_matcher_agrees_with_a_plain_reference(definitions, subject):
    policy = rules(*({"name": f"r{i}", "match": m, "decision": d} for i, (m, d) in enumerate(definitions)))
    expected = next((f"r{i}" for i, (m, _) in enumerate(definitions) if reference_fits(m, subject)), None)
    found = rule_match(policy, subject)
    assert (found.name if found else None) == expected
