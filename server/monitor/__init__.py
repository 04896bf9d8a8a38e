"""Monitoring's computation core: reference profiles, mergeable observation windows, drift and
performance detectors, and the per-model monitoring spec. Pure: numpy, scipy and datasketches only (no
database, no gRPC, no pandas or scikit-learn), so servers, the trainer and benchmarks share it."""
