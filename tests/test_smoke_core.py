import operator

from streamlib import Broadcast, Flow, GraphBuilder, Merge, Sink, Source


async def test_map_filter_fold_sum() -> None:
    n = 100_000
    got = await Source.from_iterable(range(n)).map(lambda x: x * 3).filter(lambda x: x % 2 == 0).run_with(
        Sink.fold(0, operator.add)
    )
    assert got == sum(x * 3 for x in range(n) if x * 3 % 2 == 0)


async def test_graph_split_and_merge_sum() -> None:
    n = 10_000
    b = GraphBuilder()
    src = b.add(Source.from_iterable(range(n)))
    bcast, merge = b.add(Broadcast(2)), b.add(Merge(2))
    sink = b.add(Sink.fold(0, operator.add))
    src >> bcast
    bcast.out(0) >> Flow.map(lambda x: x * 3).filter(lambda x: x % 2 == 0) >> merge.inp(0)
    bcast.out(1) >> Flow.filter(lambda x: x % 2 == 1) >> merge.inp(1)
    merge >> sink
    got = await b.to_runnable(sink).run()
    assert got == sum(x * 3 for x in range(n) if x * 3 % 2 == 0) + sum(x for x in range(n) if x % 2)
