"""Shared model pools: pure planning (sizing, routing by residency) and the multi-model replay."""
