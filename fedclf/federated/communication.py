"""Bytes a federated round moves: what each client uploads (its
`ClientOutput.upload_bytes`) and downloads (the broadcast), as fields of the
round's metrics row, and their run totals for summary.json.

Counted: an upload is what the client work says it sends (dense float32
unless a codec of compression.py encodes it: see `ClientOutput`); a
download is the dense float32 broadcast (the trainable and non-trainable
weights and the server's extra state, e.g. SCAFFOLD's control variate).
Protocol overhead (headers, framing) is not counted.

On the `tff` backend the round's row also has what actually crossed the
gRPC connections to the workers (`WIRE_FIELDS`, see tff_context.py); the
summary sums them as `total_<field without "bytes/">_bytes`.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

# summary.json reports megabytes of 10^6 bytes (not MiB).
BYTES_PER_MEGABYTE = 1e6
# Rows' gRPC byte counts (tff backend) and their summary.json totals.
WIRE_FIELDS = {"bytes/sent_to_workers": "total_bytes_sent_to_workers",
               "bytes/received_from_workers":
                   "total_bytes_received_from_workers",
               "bytes/computations_to_workers":
                   "total_bytes_computations_to_workers"}


def dense_bytes(tensors: Sequence) -> int:
  """Bytes of `tensors` sent as float32 (from their static shapes)."""
  return 4 * sum(int(np.prod(t.shape)) for t in tensors)


def broadcast_bytes(state) -> int:
  """Dense float32 bytes of what the server sends each sampled client."""
  return dense_bytes(list(state.trainable) + list(state.non_trainable) +
                     list(state.extra))


def add_communication_fields(row: Dict[str, float], outputs: Sequence,
                             state, clients_sampled: int) -> None:
  """Adds the round's `upload_bytes` (summed over the clients that trained:
  failed and non-finite clients are dropped and their upload not counted),
  `upload_bytes_per_client` (their mean) and `download_bytes` (the
  broadcast, times the sampled clients: a client that drops out has
  downloaded the model already) to `row`."""
  trained = [o for o in outputs if not float(o.dropped)]
  upload = sum(int(o.upload_bytes) for o in trained)
  row["upload_bytes"] = upload
  row["upload_bytes_per_client"] = upload / max(len(trained), 1)
  row["download_bytes"] = broadcast_bytes(state) * int(clients_sampled)


class CommunicationTotals:
  """The run's uploaded and downloaded bytes, summed over logged rows (on
  resume the loop rebuilds it from the rows it kept, so a restored round
  counts once)."""

  def __init__(self, history: List[Dict]):
    self.counted = False
    self.upload = 0
    self.download = 0
    self.wire = {}
    for row in history:
      self.add(row)

  def add(self, row: Dict) -> None:
    if "upload_bytes" not in row:
      return  # a runner that does not count bytes (domain adaptation)
    self.counted = True
    self.upload += int(row["upload_bytes"])
    self.download += int(row.get("download_bytes", 0))
    for field, total in WIRE_FIELDS.items():
      if field in row:
        self.wire[total] = self.wire.get(total, 0) + int(row[field])

  def fields(self) -> Dict:
    """summary.json's totals ({} for runs that do not count bytes)."""
    if not self.counted:
      return {}
    return {"total_upload_bytes": self.upload,
            "total_upload_megabytes": round(
                self.upload / BYTES_PER_MEGABYTE, 6),
            "total_download_bytes": self.download,
            "total_download_megabytes": round(
                self.download / BYTES_PER_MEGABYTE, 6),
            **self.wire}
