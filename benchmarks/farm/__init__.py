"""The device farm: `farm.toml` (spec), the SQLite results database (store), the scheduler with resume and
retries (run), the same across hosts on Ray (cluster, optional), and results files for `edgevit report` (export).
"""
