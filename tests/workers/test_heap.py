import gc

from workers.heap import GcPauses, freeze


def test_freeze_exempts_the_live_heap_and_pauses_are_counted_per_generation():
    frozen = freeze()
    pauses = GcPauses(frozen)
    try:
        assert frozen > 1000 and pauses.summary()["frozen"] == frozen
        gc.collect(0)
        gc.collect(2)
        assert pauses.count[0] >= 1 and pauses.count[2] >= 1
        assert pauses.max_ms > 0 and pauses.total_ms >= pauses.max_ms
        cycle = []
        cycle.append(cycle)  # garbage made after the freeze is still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        pauses.close()
    n = list(pauses.count)
    gc.collect()
    assert pauses.count == n, "a closed monitor no longer counts"
