"""viewer.stills.budget: the process-wide upload memory budget."""

from __future__ import annotations

import threading

import pytest

from viewer.stills.budget import Busy, MemoryBudget


def test_reservations_share_the_budget_and_wait_for_each_other():
    budget = MemoryBudget(100)
    first = budget.reservation()
    first.grow(60, timeout_s=0)
    first.grow(30, timeout_s=0)
    with pytest.raises(Busy, match="90 of 100"):
        budget.reservation().grow(20, timeout_s=0.05)
    granted = threading.Event()

    def second() -> None:
        with budget.reservation() as mine:
            mine.grow(50, timeout_s=30)
            granted.set()

    waiter = threading.Thread(target=second)
    waiter.start()
    assert not granted.wait(0.2)  # still full
    first.release()
    assert granted.wait(10)
    waiter.join(10)
    assert budget.used == 0


def test_a_reservation_larger_than_the_budget_gets_all_of_it_once_free():
    budget = MemoryBudget(100)
    with budget.reservation() as big:
        big.grow(70, timeout_s=0)
        big.grow(500, timeout_s=0)
        assert big.held == budget.used == 100
    assert budget.used == 0
