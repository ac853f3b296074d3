"""Test-wide fixtures."""

import logging

import pytest


@pytest.fixture(autouse=True)
def _absl_info_reaches_caplog():
  """Tests that read absl's INFO lines through `caplog` must not depend on
  which tests ran before them in the same pytest worker: one that runs a
  binary in-process, or a library it imports, can leave the `absl` logger
  raised, disabled or cut off from the root logger, and under xdist that
  broke tests at random. Each test starts with the logger as a fresh
  process has it."""
  logger = logging.getLogger("absl")
  logger.setLevel(logging.NOTSET)
  logger.disabled = False
  logger.propagate = True
  logging.disable(logging.NOTSET)
  yield
