"""Tile placement (viewer/stills/placement.py): each tile to the partition with the fewest of the
job's tiles out, none past the window while tiles come back, round-robin once they stop coming."""

from __future__ import annotations

import threading

import pytest

from viewer.stills.placement import Placement, Placements

PARTITIONS = [0, 1, 2, 3]


def test_tiles_go_round_robin_from_the_start_partition_while_all_have_room():
    placement = Placement(PARTITIONS, window=2, start=1)
    assert [placement.next_partition(i) for i in range(8)] == [1, 2, 3, 0, 1, 2, 3, 0]
    assert all(len(out) == 2 for out in placement.out.values())


def test_the_next_tile_goes_where_one_came_back():
    placement = Placement(PARTITIONS, window=2, start=0)
    for i in range(8):
        placement.next_partition(i)
    placement.collected([2])  # tile 2 went to partition 2
    assert placement.next_partition(8) == 2
    placement.collected([4, 8])  # partitions 0 and 2
    assert sorted(placement.next_partition(i) for i in (9, 10)) == [0, 2]


def test_duplicates_and_unknown_tiles_change_nothing():
    placement = Placement(PARTITIONS, window=1, start=0)
    for i in range(4):
        placement.next_partition(i)
    placement.collected([1, 1, 99])
    assert {p: len(out) for p, out in placement.out.items()} == {0: 1, 1: 0, 2: 1, 3: 1}
    assert placement.next_partition(4) == 1


def test_a_full_window_waits_until_a_tile_comes_back():
    placement = Placement(PARTITIONS, window=1, stall_s=60, start=0)
    for i in range(4):
        placement.next_partition(i)
    asked = threading.Event()
    chosen = []

    def publish():
        asked.set()
        chosen.append(placement.next_partition(4))

    publisher = threading.Thread(target=publish)
    publisher.start()
    asked.wait(5)
    assert chosen == []  # blocked: every partition has its window out
    placement.collected([3])
    publisher.join(5)
    assert chosen == [3] and placement.paced


def test_without_feedback_the_rest_goes_round_robin_after_one_stall():
    placement = Placement(PARTITIONS, window=1, stall_s=0.01, start=0)
    assert [placement.next_partition(i) for i in range(12)] == [0, 1, 2, 3] * 3
    assert not placement.paced


def test_a_job_is_paced_for_pace_s_at_most():
    placement = Placement(PARTITIONS, window=1, stall_s=60, pace_s=0, start=0)
    assert [placement.next_partition(i) for i in range(8)] == [0, 1, 2, 3] * 2
    assert not placement.paced


def test_room_is_used_without_waiting_even_past_pace_s():
    placement = Placement(PARTITIONS, window=2, stall_s=60, pace_s=0, start=0)
    for i in range(8):
        placement.next_partition(i)
    assert placement.paced  # never had to wait


def simulate(rates: dict[str, int], owners: dict[str, list[int]], tiles: int, window: int) -> dict[str, int]:
    """Tiles each processor does when each does ``rates[name]`` tiles of its partitions (oldest
    first) per step, and the publisher sends whenever a partition has room."""
    placement = Placement(PARTITIONS, window=window, stall_s=60, start=0)
    sent = 0
    done = {name: 0 for name in rates}
    progress = True
    while progress:  # until nothing more is sent or done
        progress = False
        while sent < tiles and placement.has_room():
            placement.next_partition(sent)
            sent += 1
        for name, rate in rates.items():
            waiting = sorted(i for p in owners[name] for i in placement.out[p])[:rate]
            placement.collected(waiting)
            done[name] += len(waiting)
            progress = progress or bool(waiting)
    return done


def test_a_fast_processor_gets_most_tiles_and_a_slow_one_few():
    owners = {"fast": [0, 1], "slow": [2, 3]}
    done = simulate({"fast": 4, "slow": 1}, owners, tiles=64, window=2)
    assert sum(done.values()) == 64
    assert done["slow"] <= 64 // 4 < done["fast"]  # round-robin gave each 32


def test_a_stopped_processor_gets_only_its_windows():
    done = simulate({"fast": 2, "stopped": 0}, {"fast": [0, 1], "stopped": [2, 3]}, tiles=64, window=2)
    assert done == {"fast": 60, "stopped": 0}  # 2 partitions x window 2 wait for it


def test_equal_processors_share_evenly():
    done = simulate({"a": 2, "b": 2}, {"a": [0, 1], "b": [2, 3]}, tiles=64, window=2)
    assert done == {"a": 32, "b": 32}


def test_placements_route_feedback_to_the_job_being_published():
    placements = Placements(window=1, stall_s=60)
    with placements.publishing("job-a", PARTITIONS) as placement:
        first = placement.next_partition(0)
        placements.collected("job-b", [0])  # another job's tile 0
        assert placement.out[first] == {0}
        placements.collected("job-a", [0])
        assert placement.out[first] == set()
    placements.collected("job-a", [0])  # after publishing: ignored


def test_no_partitions_is_an_error():
    with pytest.raises(ValueError):
        Placement([])
