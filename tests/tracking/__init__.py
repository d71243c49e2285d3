"""Tests of heartflow's tracking layer."""
