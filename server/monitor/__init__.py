"""Monitoring: reference profiles, mergeable observation windows, drift and performance detectors, the
per-model monitoring spec, and the engine that runs them live.

The computation (states, profile, codec, window, outcomes, detectors, performance, spec) is pure: numpy,
scipy and datasketches only (no database, no gRPC, no pandas or scikit-learn), so servers, the trainer and
benchmarks share it. `engine` is the live side: it counts batches into windows, flushes them to
PostgreSQL through store/monitoring.py, closes full windows and raises alerts through the ingest path.
"""
