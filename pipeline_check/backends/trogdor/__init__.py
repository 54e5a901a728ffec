"""Background load through Apache Kafka's Trogdor: ProduceBench tasks on its agents, through its coordinator."""
