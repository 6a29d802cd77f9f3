"""Measuring engines: dataset manifests (`manifest`), error rates (`metrics`), runs of one engine over
a dataset (`evaluate`), synthetic pages and speed harnesses.

Nothing is imported here, so a GPU script can import one submodule (e.g. `polyocr.bench.speed`)
without pulling in the packages the others need.
"""
