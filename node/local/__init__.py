"""Whole networks on one machine: the in-process network, `castnet demo`, the multi-process testnet
on anvil, and synthetic signed histories."""
