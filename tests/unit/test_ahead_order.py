"""Which test is started ahead after the next one (forked/per_test.py,
`note_order` and `item_after`): the one after it in `session.items` only
while the tests have run in that order, and never again in the session once
one did not (an xdist worker is sent runs of neighbours: each guess across
the end of a run was a container started for nothing)."""

from types import SimpleNamespace

from pytest_hermetic.forked import per_test


def session_of(count: int) -> SimpleNamespace:
    session = SimpleNamespace(items=[])
    session.items = [SimpleNamespace(session=session, name=f"test_{i}") for i in range(count)]
    return session


def test_in_order_the_test_after_the_next_is_known():
    items = session_of(5).items
    for index, (item, nextitem) in enumerate(zip(items, items[1:])):
        per_test.note_order(item, nextitem)
        assert per_test.item_after(nextitem) is (items[index + 2] if index + 2 < len(items) else None)
    per_test.note_order(items[-1], None)  # (the last one: nothing next, no guess was wrong)
    assert per_test.item_after(items[2]) is items[3]


def test_once_a_test_comes_out_of_order_no_test_after_the_next_is_guessed_again():
    items = session_of(8).items
    per_test.note_order(items[0], items[1])
    assert per_test.item_after(items[1]) is items[2]
    per_test.note_order(items[1], items[4])  # an xdist worker's next run of tests
    assert per_test.item_after(items[4]) is None
    per_test.note_order(items[4], items[5])  # in order again: still no guess
    assert per_test.item_after(items[5]) is None


def test_a_new_session_starts_guessing_again():
    first = session_of(4).items
    per_test.note_order(first[0], first[3])
    assert per_test.item_after(first[3]) is None
    second = session_of(4).items
    per_test.note_order(second[0], second[1])
    assert per_test.item_after(second[1]) is second[2]
