"""Tests of heartflow's spec layer."""
