"""Peers and runners for chaos tests, benches and demos (no production code imports this)."""
