"""Retrieval quality of an embedding, scored by tensorflow-similarity.

Each query embedding (a test image) looks up its nearest reference
embeddings (labelled training images) by cosine distance; a neighbour
"matches" when it has the query's label. tensorflow-similarity's retrieval
metrics then score the match mask: recall@k (a match among the first k),
precision@k (the share of matches among the first k) and mAP@R (mean
average precision over the first R neighbours, R = the number of reference
images of the query's class; Musgrave et al. 2020).

The neighbours are found here by exact brute force (one matrix product per
chunk of queries) rather than by tensorflow-similarity's `Index`, whose
default search is nmslib's approximate HNSW: exact search makes the numbers
deterministic and independent of index parameters (see BUILD_NOTES.md).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

from fedclf.errors import UserError


@contextlib.contextmanager
def _stderr_silenced():
  """Points file descriptor 2 at /dev/null (C extensions write there)."""
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, "wb") as devnull:
      os.dup2(devnull.fileno(), 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def tfsim_retrieval_metrics():
  """tensorflow_similarity.retrieval_metrics, imported on first use.

  Imported here, not at the top: tensorflow-similarity's import is slow, and
  its nmslib extension prints a "compile from sources" hint on stderr at
  import, which would land in every user's log; an import error still
  raises (after stderr is restored).
  """
  with _stderr_silenced():
    from tensorflow_similarity import retrieval_metrics  # pylint: disable=g-import-not-at-top
  return retrieval_metrics


def _l2_normalize(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def match_mask(queries: np.ndarray, query_labels: np.ndarray,
               references: np.ndarray, reference_labels: np.ndarray,
               neighbours: int, chunk: int = 512) -> np.ndarray:
  """bool [Q, neighbours]: whether each query's j-th nearest reference (by
  cosine distance; ties to the lower index) has the query's label."""
  queries = _l2_normalize(queries)
  references = _l2_normalize(references)
  reference_labels = np.asarray(reference_labels)
  rows = []
  for start in range(0, len(queries), chunk):
    distance = 1.0 - queries[start:start + chunk] @ references.T
    # A stable sort: equal distances keep reference order (deterministic).
    nearest = np.argsort(distance, axis=1, kind="stable")[:, :neighbours]
    rows.append(reference_labels[nearest] ==
                np.asarray(query_labels)[start:start + chunk, None])
  return np.concatenate(rows)


def retrieval_metrics(queries: np.ndarray, query_labels: np.ndarray,
                      references: np.ndarray, reference_labels: np.ndarray,
                      ks: Sequence[int] = (1, 5)) -> Dict[str, float]:
  """recall@k and precision@k for each k, and mAP@R, of the queries.

  Args:
    queries: [Q, D] query embeddings; query_labels: [Q] int labels.
    references: [N, D] embeddings to search; reference_labels: [N].
    ks: the cut-offs of recall and precision (each <= N).

  Returns:
    `retrieval_recall_at_{k}`, `retrieval_precision_at_{k}` per k and
    `retrieval_map_at_r`, each in [0, 1].
  """
  tfsim_metrics = tfsim_retrieval_metrics()
  query_labels = np.asarray(query_labels, np.int32)
  reference_labels = np.asarray(reference_labels, np.int32)
  if len(queries) == 0 or len(references) == 0:
    raise UserError("retrieval needs at least one query and one reference")
  if min(ks) < 1 or max(ks) > len(references):
    raise UserError(f"retrieval cut-offs must be in [1, {len(references)}], "
                    f"got {list(ks)}")
  classes, counts = np.unique(reference_labels, return_counts=True)
  r = {int(c): int(n) for c, n in zip(classes, counts)}
  neighbours = max(max(ks), int(counts.max()))
  mask = tf.constant(match_mask(queries, query_labels, references,
                                reference_labels, neighbours))
  # Tensors, not arrays: the metrics look labels up in a tf hash table.
  labels = tf.constant(query_labels)
  result = {}
  for k in ks:
    result[f"retrieval_recall_at_{k}"] = tfsim_metrics.RecallAtK(k=k).compute(
        query_labels=labels, match_mask=mask)
    result[f"retrieval_precision_at_{k}"] = tfsim_metrics.PrecisionAtK(
        k=k).compute(query_labels=labels, match_mask=mask)
  result["retrieval_map_at_r"] = tfsim_metrics.MapAtK(
      r=r, clip_at_r=True, k=neighbours).compute(
          query_labels=labels, match_mask=mask)
  return {name: float(value) for name, value in result.items()}
