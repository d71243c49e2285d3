"""Tests of heartflow's model layer."""
