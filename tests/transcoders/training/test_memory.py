"""`reusing_freed_memory`: a freed large block is reused without fresh page faults inside the
context, and glibc's behaviour (a fresh mapping per large block) comes back after it."""

import resource
import sys

import pytest
import torch

from circuit_trace.transcoders.training.memory import reusing_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator (Linux)")

MIB_64 = 16 * 2**20  # float32 elements: a 64 MiB block, above glibc's largest mmap threshold (32 MiB)


def faults_of_second_block() -> int:
    """Minor page faults of filling a 64 MiB block right after a slightly larger one was freed
    (larger: torch asks for aligned memory, and a freed block of exactly the size may lack the slack)."""
    torch.ones(MIB_64 + 2**18)  # allocated, touched and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(MIB_64)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del block
    return after - before


def test_freed_block_reused_inside_and_fresh_pages_after():
    pages = MIB_64 * 4 // 4096  # 16,384 pages of 4 KiB
    with reusing_freed_memory() as applied:
        if not applied:
            pytest.skip("not glibc")
        inside = min(faults_of_second_block() for _ in range(3))  # the heap's layout may need a round
    outside = faults_of_second_block()
    assert inside < pages // 10, f"{inside} page faults inside: the freed block was not reused"
    assert outside > pages // 2, f"{outside} page faults after the context: glibc's defaults were not restored"


def test_disabled_is_a_no_op():
    with reusing_freed_memory(enabled=False) as applied:
        assert applied is False
