"""Tests of heartflow's data layer."""
