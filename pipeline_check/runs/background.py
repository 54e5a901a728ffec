"""Background load engines: the validator's own process (``local``: ``pacing.inject`` interleaves the trades
with the canaries) or Trogdor's agents (``trogdor``), worked out from ``[load.background]``.

For Trogdor the rate, the key scheme and the records become ProduceBench tasks
(``backends/trogdor/spec.py`` says how close they get to the local generator's trades): a pool of trades per
background symbol from the run's own ``TradeFactory``, keyed by symbol, to the topic the pipeline reads.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline_check.backends.kafka.connect import topic_shape
from pipeline_check.backends.trogdor.client import Coordinator
from pipeline_check.backends.trogdor.load import TrogdorLoad
from pipeline_check.backends.trogdor.spec import pool_size, produce_bench
from pipeline_check.canary.trades import TradeFactory
from pipeline_check.config import PipelineConfig
from pipeline_check.config.sections import LoadConfig
from pipeline_check.core.clock import Clock

DETAIL = (
    "ProduceBench per agent: keyed by symbol (Kafka's partitioner), each record one of {pool} trades per symbol "
    "of the run's generator made at the start (ids, prices and times repeat), straight to {topic}"
)
MAX_DRAWS = 100_000  # background trades drawn to fill every symbol's pool (symbols are drawn at random)


def trade_pools(factory: TradeFactory, symbols: tuple[str, ...], time_ms: int) -> dict[str, list[bytes]]:
    """``pool_size`` background trades of each symbol, as JSON, from the run's generator."""
    size = pool_size(len(symbols))
    pools: dict[str, list[bytes]] = {s: [] for s in symbols}
    for _ in range(MAX_DRAWS):
        trade = factory.background(time_ms)
        pool = pools[trade.symbol]
        if len(pool) < size:
            pool.append(trade.to_json().encode())
        if all(len(p) == size for p in pools.values()):
            return pools
    raise RuntimeError(f"the background generator gave too few trades of some of {symbols}")


async def trogdor_load(
    config: PipelineConfig,
    load: LoadConfig,
    factory: TradeFactory,
    run: str,
    clock: Clock,
    note: Callable[[str], None],
    duration_s: float,
) -> TrogdorLoad:
    """The run's background as Trogdor tasks (not yet started), bounded to ``duration_s``."""
    settings = load.background
    bootstrap, topic = config.background_target()
    partitions, replication = await topic_shape(bootstrap, topic, "load.background.bootstrap")
    symbols = config.messages.background_symbols
    plan = produce_bench(
        run=run,
        rate=load.background_rate,
        agents=settings.agents,
        bootstrap=bootstrap,
        topic=topic,
        partitions=partitions,
        replication=replication,
        trades=trade_pools(factory, symbols, clock.wall_ms(clock.now())),
        duration_s=duration_s,
        producer=settings.producer,
        seed=load.seed,
    )
    coordinator = Coordinator(settings.coordinator or "", "load.background.coordinator")
    detail = DETAIL.format(pool=pool_size(len(symbols)), topic=topic)
    return TrogdorLoad(coordinator, plan, note, detail=detail)
