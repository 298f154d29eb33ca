"""ByteLRUCache: LRU order, byte bound, oversize items, counters, threads; nbytes_of sizing."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

import numpy as np
import pytest
import supervision as sv
import torch

from grounded.cache import ByteLRUCache, nbytes_of


def test_evicts_least_recently_used_first():
    cache = ByteLRUCache(100)
    assert cache.put("a", 1, 40) and cache.put("b", 2, 40)
    assert cache.get("a") == 1  # "a" is now the most recently used
    assert cache.put("c", 3, 40)  # 120 > 100: evicts "b"
    assert "b" not in cache and cache.keys() == ["a", "c"]
    assert cache.nbytes == 80 and len(cache) == 2 and cache.evictions == 1
    assert cache.put("d", 4, 100)  # needs the whole budget: evicts both
    assert cache.keys() == ["d"] and cache.nbytes == 100


def test_oversize_item_is_not_stored_and_drops_stale_value():
    cache = ByteLRUCache(100)
    cache.put("a", "old", 10)
    assert cache.put("big", "x", 101) is False
    assert "big" not in cache and cache.nbytes == 10
    assert cache.put("a", "new but huge", 500) is False
    assert "a" not in cache and cache.get("a", "missing") == "missing" and cache.nbytes == 0


def test_replace_counters_contains_clear_pop():
    cache = ByteLRUCache(50)
    cache.put("k", 1, 30)
    cache.put("k", 2, 20)  # replacing re-sizes
    assert cache.nbytes == 20 and cache.get("k") == 2
    assert cache.get("nope") is None
    assert (cache.hits, cache.misses) == (1, 1)
    cache.put("j", 3, 10)
    assert "k" in cache and cache.keys() == ["k", "j"]  # membership does not touch the order
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.pop("k") == 2 and cache.nbytes == 10 and cache.pop("k", "gone") == "gone"
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0 and cache.get("j") is None
    assert "ByteLRUCache(entries=0" in repr(cache)


def test_zero_budget_and_invalid_arguments():
    cache = ByteLRUCache(0)
    assert cache.put("a", 1, 0) and not cache.put("b", 1, 1)
    for bad in (-1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="max_bytes"):
            ByteLRUCache(bad)
        with pytest.raises(ValueError, match="nbytes"):
            cache.put("x", 1, bad)


def test_byte_bound_holds_under_random_use():
    rng = random.Random(0)
    cache = ByteLRUCache(1000)
    for _ in range(2000):
        key = rng.randrange(50)
        if rng.random() < 0.5:
            cache.put(key, key, rng.randrange(400))
        else:
            cache.get(key)
        assert cache.nbytes <= 1000


def test_thread_safety_smoke():
    cache = ByteLRUCache(5000)
    size_of = {key: (key * 37) % 300 for key in range(100)}  # every key always has the same size
    errors: list[BaseException] = []
    gets = [0] * 8

    def work(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(3000):
                key = rng.randrange(100)
                if rng.random() < 0.6:
                    cache.put(key, ("value", key), size_of[key])
                else:
                    gets[seed] += 1
                    value = cache.get(key)
                    assert value is None or value == ("value", key)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert cache.nbytes == sum(size_of[key] for key in cache.keys()) <= 5000
    assert cache.hits + cache.misses == sum(gets)  # no lost counter updates
    assert cache.hits > 0 and cache.misses > 0


@dataclass(frozen=True)
class _Embedding:
    features: torch.Tensor
    sizes: tuple[int, int]


class _SelfSized:
    def nbytes(self) -> int:
        return 123


def test_nbytes_of():
    array = np.zeros((10, 10), np.float32)
    tensor = torch.zeros(2, 3, dtype=torch.float16)
    assert nbytes_of(array) == 400 and nbytes_of(tensor) == 12
    assert nbytes_of(_Embedding(tensor, (4, 5))) == 12
    assert nbytes_of({"a": array, "b": (tensor, [array])}) == 1 + 400 + 1 + 12  # shared array once
    assert nbytes_of(_SelfSized()) == 123 and nbytes_of(b"abcd") == 4 and nbytes_of(None) == 0
    det = sv.Detections(xyxy=np.zeros((3, 4), np.float32), mask=np.zeros((3, 8, 8), bool),
                        confidence=np.zeros(3, np.float32), class_id=np.zeros(3, np.int64))
    assert nbytes_of(det) == 48 + 192 + 12 + 24
