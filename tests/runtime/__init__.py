"""Tests of heartflow's runtime layer."""
