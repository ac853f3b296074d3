"""Run records: config.json, metrics.jsonl, summary.json (atomic writes)."""

from fedclf.results.record import atomic_write_json
from fedclf.results.record import environment_info
from fedclf.results.record import RunRecorder
