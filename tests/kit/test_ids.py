import os

import pytest

from tollway.kit.ids import is_id, new_id, new_ids, random_bytes


class TestIds:
    def test_ids_carry_their_prefix_and_are_recognised(self) -> None:
        value = new_id("usr")
        assert value.startswith("usr_")
        assert is_id(value, "usr")
        assert not is_id(value, "org")
        assert not is_id("usr_' OR 1=1 --")

    def test_ids_sort_by_creation_time(self) -> None:
        first = new_id("evt")
        second = new_id("evt")
        # IDs order by the wall clock's millisecond; wait for the next one without sleeping.
        while second[4:14] == first[4:14]:
            second = new_id("evt")
        assert first < second

    def test_ids_do_not_collide(self) -> None:
        assert len({new_id("key") for _ in range(10_000)}) == 10_000

    def test_random_bytes_are_never_handed_out_twice_across_pool_refills(self) -> None:
        chunks = [random_bytes(16) for _ in range(1_000)]  # about four pools' worth
        assert len(set(chunks)) == 1_000
        assert all(len(chunk) == 16 for chunk in chunks)
        assert len(random_bytes(10_000)) == 10_000  # more than a pool holds

    def test_a_forked_process_does_not_repeat_the_parents_ids(self) -> None:
        new_id("key")  # the parent has random bytes pooled
        reader, writer = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - the child reports through the pipe
            os.write(writer, "\n".join(new_id("key") for _ in range(50)).encode())
            os._exit(0)
        os.close(writer)
        os.waitpid(child, 0)
        with os.fdopen(reader) as pipe:
            theirs = pipe.read().split("\n")
        ours = [new_id("key") for _ in range(50)]
        # The body after the millisecond timestamp is the random part.
        assert not {value[14:] for value in theirs} & {value[14:] for value in ours}

    def test_bad_prefixes_are_refused(self) -> None:
        with pytest.raises(ValueError, match="prefix"):
            new_id("USR")


class TestBulkIds:
    def test_bulk_ids_are_valid_unique_and_increasing(self) -> None:
        ids = new_ids("use", 1000)
        assert len(set(ids)) == 1000
        assert ids == sorted(ids)
        assert all(is_id(value, "use") for value in ids)
        assert new_ids("use", 0) == []

    def test_two_batches_do_not_collide(self) -> None:
        assert not set(new_ids("use", 500)) & set(new_ids("use", 500))
