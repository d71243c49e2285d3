"""Process helpers with no heartflow dependencies: quiet defaults and TensorFlow's import
(``quiet_import``), garbage collection paused during imports (``gc_pause``), the local
Prefect API server started early (``prefect_server``), and a fast exit (``fast_exit``)."""
