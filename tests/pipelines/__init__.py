"""Tests of the pipelines/ flows (run, sweeps, baselines, deployments, faults)."""
