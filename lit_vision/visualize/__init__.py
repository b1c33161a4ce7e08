"""Pictures and plots: what a run's model does, on disk and on the dashboard (``docs/watching_runs.md``)."""
