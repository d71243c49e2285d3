"""Process helpers for the CLI, the API and workers: quiet imports, the local Prefect server,
which failures are transient, sweep worker threads, and a fast exit."""
