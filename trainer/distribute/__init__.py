"""Devices, precision, strategies and the multi-worker cluster a run executes on."""
