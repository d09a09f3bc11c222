"""The sweep: its configs (a grid or draws), its state while it trains, halving, the processes' shares of the
configs, the accuracy metric, and the results."""
