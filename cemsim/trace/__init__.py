"""Key-access traces: the contract between the model side (capture) and the hardware side (simulation).

records.py   TraceHeader, StepRecord, SCHEMA_VERSION (the in-memory contract)
format.py    TraceWriter / TraceReader (Parquet, checksummed, streamed)
synthetic.py synthetic_header / synthetic_steps (StepRecords from a survival law, no model)
projection.py fit_traces / project_file (longer contexts, other geometries)
capture.py   capture (model run -> traces; needs torch and transformers, imported lazily)
"""

from cemsim.trace.format import TraceReader, TraceWriter, verify_file
from cemsim.trace.records import SCHEMA_VERSION, StepRecord, TraceHeader

__all__ = ["SCHEMA_VERSION", "StepRecord", "TraceHeader", "TraceReader", "TraceWriter", "verify_file"]
