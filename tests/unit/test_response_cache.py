"""The gateway's response cache (`gateway_svc.cache`) without servers: its byte bound, its eviction
order, its metrics and its keys. The cache in front of real tiers: tests/gateway/test_cache.py."""

from __future__ import annotations

from prometheus_client import REGISTRY

from gateway_svc.cache import ENTRY_OVERHEAD, KEY_BYTES, ResponseCache, entry_size, params_key, record_ids, record_key
from protos import splitserve_pb2 as pb
from splitserve.core import codec
from splitserve.tasks import get


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _key(i: int) -> bytes:
    return b"r" + i.to_bytes(32, "big")


def test_bounded_in_bytes_least_recently_used_out_first() -> None:
    value = b"w" + bytes(100)
    size = entry_size(value)
    assert size == KEY_BYTES + 101 + ENTRY_OVERHEAD
    cache = ResponseCache(3 * size + size // 2)  # room for three entries, not four
    gauge, evictions = _metric("splitserve_gateway_cache_bytes"), _metric("splitserve_gateway_cache_evictions_total")
    for i in range(3):
        cache.put(_key(i), value)
    assert cache.nbytes == 3 * size
    assert _metric("splitserve_gateway_cache_bytes") - gauge == 3 * size
    assert cache.get(_key(0)) == value  # 0 is now the most recently used: 1 is the oldest
    cache.put(_key(3), value)
    assert cache.get(_key(1)) is None
    assert [cache.get(_key(i)) is not None for i in (0, 2, 3)] == [True, True, True]
    assert _metric("splitserve_gateway_cache_evictions_total") - evictions == 1
    cache.put(_key(4), bytes(2 * size - KEY_BYTES - ENTRY_OVERHEAD))  # a bigger one pushes out as many as it needs
    assert cache.get(_key(4)) is not None and cache.nbytes == 3 * size
    assert cache.nbytes <= 3 * size + size // 2
    assert [cache.get(_key(i)) is not None for i in (0, 2, 3, 4)] == [False, False, True, True]
    assert _metric("splitserve_gateway_cache_evictions_total") - evictions == 3
    assert _metric("splitserve_gateway_cache_bytes") - gauge == cache.nbytes


def test_an_answer_larger_than_the_cache_is_not_kept() -> None:
    cache = ResponseCache(1000)
    cache.put(_key(0), bytes(10))
    cache.put(_key(1), bytes(1000))
    assert cache.get(_key(1)) is None and cache.get(_key(0)) == bytes(10)
    assert cache.nbytes == entry_size(bytes(10))


def test_record_key_holds_fingerprint_params_and_record_but_not_its_id() -> None:
    record = pb.Record(id="a", text="the cat sat")
    base = record_key("f1", b'{"normalize":false}', record)
    assert record_key("f1", b'{"normalize":false}', pb.Record(id="b", text="the cat sat")) == base
    assert record_key("f1", b'{"normalize":false}', pb.Record(text="the cat sat")) == base
    others = [
        record_key("f2", b'{"normalize":false}', record),  # another bundle version
        record_key("f1", b'{"normalize":true}', record),  # other effective params
        record_key("f1", b'{"normalize":false}', pb.Record(id="a", text="the cat sat.")),  # another text
        record_key("f1", b'{"normalize":false}', pb.Record(id="a", text="the cat sat", text_pair="x")),
        record_key("f1", b'{"normalize":false}', pb.Record(id="a", text="the cat sat", candidate_labels=["x"])),
    ]
    assert len({base, *others}) == 6


def test_params_key_holds_fingerprint_and_params_in_any_order() -> None:
    one = params_key("f1", codec.params_to_struct({"pooling": "mean", "normalize": True}))
    assert params_key("f1", codec.params_to_struct({"normalize": True, "pooling": "mean"})) == one
    assert params_key("f2", codec.params_to_struct({"normalize": True, "pooling": "mean"})) != one
    assert params_key("f1", codec.params_to_struct({"normalize": False, "pooling": "mean"})) != one
    assert params_key("f1", codec.params_to_struct({})) != one
    assert one[:1] == b"p" and len(one) == KEY_BYTES


def test_record_ids_as_the_tiers_give_them() -> None:
    assert record_ids([pb.Record(id="a"), pb.Record(), pb.Record(id="x")]) == ["a", "1", "x"]
    assert record_ids([pb.Record(id="1"), pb.Record()]) is None  # two records answer as "1": not split


def test_sampled_generation_is_never_deterministic() -> None:
    task = get("text-generation")
    assert task.deterministic({"do_sample": False, "seed": None})
    assert not task.deterministic({"do_sample": True, "seed": 7})  # a seed does not make a batch's sample its own
    assert get("feature-extraction").deterministic({"pooling": "mean"})
