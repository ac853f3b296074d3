"""fedclf.ssl.retrieval: tensorflow-similarity's retrieval metrics on a
hand-made embedding set whose neighbours are worked out by hand."""

import numpy as np
import pytest

from fedclf.errors import UserError
from fedclf.ssl import retrieval


def unit(degrees):
  angle = np.deg2rad(np.asarray(degrees, np.float64))
  return np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(np.float32)


# References at 0 and 10 degrees (class 0), 90 and 80 degrees (class 1).
REFERENCES = unit([0, 10, 90, 80])
REFERENCE_LABELS = np.array([0, 0, 1, 1])
# Cosine distance orders neighbours by angle:
#   query at  2 (class 0): 0, 10, 80, 90   -> match, match, miss, miss
#   query at 60 (class 0): 80, 90, 10, 0   -> miss, miss, match, match
#   query at 87 (class 1): 90, 80, 10, 0   -> match, match, miss, miss
#   query at 43 (class 1): 10, 80, 0, 90   -> miss, match, miss, match
QUERIES = unit([2, 60, 87, 43])
QUERY_LABELS = np.array([0, 0, 1, 1])


def test_match_mask_by_hand():
  mask = retrieval.match_mask(QUERIES, QUERY_LABELS, REFERENCES,
                              REFERENCE_LABELS, neighbours=4, chunk=3)
  np.testing.assert_array_equal(mask, [[1, 1, 0, 0], [0, 0, 1, 1],
                                       [1, 1, 0, 0], [0, 1, 0, 1]])


def test_retrieval_metrics_by_hand():
  got = retrieval.retrieval_metrics(QUERIES, QUERY_LABELS, REFERENCES,
                                    REFERENCE_LABELS, ks=(1, 2))
  expected = {
      "retrieval_recall_at_1": 2 / 4,  # queries 2 and 87 only
      "retrieval_recall_at_2": 3 / 4,  # and 43 (its 2nd neighbour)
      "retrieval_precision_at_1": 2 / 4,
      "retrieval_precision_at_2": (2 + 0 + 2 + 1) / 8,
      # R = 2 per class; AP@R = sum of precision at each relevant rank
      # within the first R, over R: 1, 0, 1 and (1/2) / 2.
      "retrieval_map_at_r": (1 + 0 + 1 + 0.25) / 4,
  }
  assert got.keys() == expected.keys()
  for name, value in expected.items():
    assert got[name] == pytest.approx(value, abs=1e-6), name


def test_scale_does_not_matter_and_bad_cutoffs_are_refused():
  scaled = retrieval.retrieval_metrics(3 * QUERIES, QUERY_LABELS,
                                       0.5 * REFERENCES, REFERENCE_LABELS,
                                       ks=(1,))
  assert scaled["retrieval_recall_at_1"] == pytest.approx(0.5)
  with pytest.raises(UserError, match=r"cut-offs must be in \[1, 4\]"):
    retrieval.retrieval_metrics(QUERIES, QUERY_LABELS, REFERENCES,
                                REFERENCE_LABELS, ks=(5,))


def test_agrees_with_tfsim_own_index():
  # tensorflow-similarity's Indexer (nmslib search) on the same embeddings:
  # an independent neighbour search giving the same recall@k.
  from tensorflow_similarity.indexer import Indexer  # pylint: disable=g-import-not-at-top
  tfsim = retrieval.tfsim_retrieval_metrics()
  index = Indexer(embedding_size=2, distance="cosine", search="nmslib")
  index.batch_add(REFERENCES, labels=REFERENCE_LABELS, verbose=0)
  theirs = index.evaluate_retrieval(
      QUERIES, QUERY_LABELS, [tfsim.RecallAtK(k=1), tfsim.RecallAtK(k=2)],
      verbose=0)
  ours = retrieval.retrieval_metrics(QUERIES, QUERY_LABELS, REFERENCES,
                                     REFERENCE_LABELS, ks=(1, 2))
  assert float(theirs["recall@1"]) == pytest.approx(
      ours["retrieval_recall_at_1"])
  assert float(theirs["recall@2"]) == pytest.approx(
      ours["retrieval_recall_at_2"])
