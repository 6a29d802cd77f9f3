"""Big jobs: a durable per-page work list in an output folder, worker processes on every core (or
GPU), and the same work list on a Ray cluster. See driver.py for the flow and docs/scaling.md."""

from polyocr.batch.driver import BatchOptions, BatchProgress, BatchReport, make_spec, plan_workers, run_batch

__all__ = ["BatchOptions", "BatchProgress", "BatchReport", "make_spec", "plan_workers", "run_batch"]
