"""The orchestrator role: offers, quotes, paid segment work on its own engine or remote workers,
ticket redemption and round rewards. `worker` is the remote worker process that attaches to one."""
