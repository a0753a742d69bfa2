"""Port allocation: no collisions with claimed ports, recent hand-outs, or bound sockets."""

from __future__ import annotations

import socket
import threading

import pytest

from workers.runtimes.ports import NoFreePortError, PortAllocator, port_is_bindable


def _free_range(size: int) -> tuple[int, int]:
    """A run of `size` ports that are all bindable right now (searching upwards from 30000)."""
    start = 30000
    while start < 60000:
        if all(port_is_bindable(p) for p in range(start, start + size)):
            return start, start + size - 1
        start += size
    pytest.skip("no free port run found")


def test_allocates_distinct_ports_in_range() -> None:
    lo, hi = _free_range(10)
    alloc = PortAllocator((lo, hi))
    ports = [alloc.allocate() for _ in range(10)]
    assert sorted(ports) == list(range(lo, hi + 1))
    with pytest.raises(NoFreePortError):
        alloc.allocate()


def test_skips_ports_claimed_by_labels() -> None:
    lo, hi = _free_range(5)
    alloc = PortAllocator((lo, hi))
    assert alloc.allocate(used={lo, lo + 1}) == lo + 2


def test_skips_ports_bound_by_other_processes() -> None:
    lo, hi = _free_range(3)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", lo))
        sock.listen()
        assert not port_is_bindable(lo)
        assert PortAllocator((lo, hi)).allocate() == lo + 1


def test_released_port_is_reused_only_after_the_others() -> None:
    lo, hi = _free_range(3)
    alloc = PortAllocator((lo, hi))
    first = alloc.allocate()
    alloc.release(first)
    # Round-robin: a just-released port (its replica may still be shutting down) comes last.
    assert [alloc.allocate(), alloc.allocate(), alloc.allocate()] == [lo + 1, lo + 2, lo]


def test_concurrent_allocation_has_no_collisions(tmp_path) -> None:
    lo, hi = _free_range(40)
    # Two allocators sharing a lock file stand for two worker processes.
    a = PortAllocator((lo, hi), lock_path=tmp_path / "ports.lock")
    b = PortAllocator((lo, hi), lock_path=tmp_path / "ports.lock")
    claimed: list[int] = []
    mutex = threading.Lock()

    def grab(alloc: PortAllocator) -> None:
        for _ in range(10):
            with alloc.locked():
                with mutex:
                    used = set(claimed)
                port = alloc.allocate(used)
                with mutex:
                    claimed.append(port)  # what a container label would record

    threads = [threading.Thread(target=grab, args=(x,)) for x in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 40
    assert len(set(claimed)) == 40


def test_rejects_bad_range() -> None:
    with pytest.raises(ValueError):
        PortAllocator((2000, 1000))
