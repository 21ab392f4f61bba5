"""Property: any drawn plan is either valid, batched as the rules say, or refused with the code the rules give."""

import pytest
from hypothesis import event, given, settings

from plans.validation import PlanInvalid, validate_plan
from tests.support.dags import Drawn, expected_batches, expected_error, is_cycle, plans


@settings(max_examples=400, deadline=None)
@given(drawn=plans())
def test_a_drawn_plan_is_batched_in_dependency_order_or_refused_with_the_right_code(drawn: Drawn):
    expected = expected_error(drawn)
    event(expected or "valid")  # the mix of outcomes shows with --hypothesis-show-statistics
    if expected:
        with pytest.raises(PlanInvalid) as refused:
            validate_plan(drawn.data(), agents={"script"})
        assert refused.value.code == expected
        if expected == "cyclic_dependencies":
            assert is_cycle(drawn, refused.value.details["cycle"])
        return

    spec = validate_plan(drawn.data(), agents={"script"})
    batches = [list(batch) for batch in spec.batches]
    assert batches == expected_batches(drawn)
    # What that means, said plainly: each subtask once, no batch over max_parallel, dependencies in earlier batches.
    batch_of = {key: index for index, batch in enumerate(batches) for key in batch}
    assert sorted(batch_of) == sorted(each["key"] for each in drawn.subtasks)
    assert all(len(batch) <= drawn.max_parallel for batch in batches)
    assert all(batch_of[dep] < batch_of[key] for key, deps in drawn.deps.items() for dep in deps)
