"""Usage ids: random version 4 UUIDs, never repeated, not even across a fork."""

from __future__ import annotations

import os
import uuid

from proxy.records import new_usage_id


def test_usage_ids_are_version_4_uuids() -> None:
    for _ in range(600):  # more than two pools: every slot of a pool is marked
        usage_id = new_usage_id()
        assert isinstance(usage_id, uuid.UUID)
        assert (usage_id.version, usage_id.variant) == (4, uuid.RFC_4122)
        assert uuid.UUID(str(usage_id)) == usage_id


def test_usage_ids_do_not_repeat_across_many_pool_refills() -> None:
    ids = {new_usage_id() for _ in range(10_000)}
    assert len(ids) == 10_000


def test_a_forked_child_does_not_reuse_the_parents_ids() -> None:
    new_usage_id()  # the pool holds ids the child must not hand out again
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        os.write(write_end, new_usage_id().bytes)
        os._exit(0)
    os.close(write_end)
    child_id = uuid.UUID(bytes=os.read(read_end, 16))
    os.close(read_end)
    os.waitpid(pid, 0)
    parent_ids = {new_usage_id() for _ in range(256)}
    assert child_id not in parent_ids
