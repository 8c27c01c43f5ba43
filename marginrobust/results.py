"""Moved to :mod:`marginrobust.evaluate.store`; these names stay importable from here
for older callers."""

from .evaluate.store import (
    ADVERSARIALS_DIR,
    EVAL_DIR,
    RECORDS,
    ArrayKey,
    EvalRecord,
    RecordKey,
    ResultsStore,
    records_frame,
)

__all__ = ["ADVERSARIALS_DIR", "EVAL_DIR", "RECORDS", "ArrayKey", "EvalRecord", "RecordKey",
           "ResultsStore", "records_frame"]
