"""Tracker FPS suite: `python -m benchmarks.suites.tracker_fps` (see run.py)."""
