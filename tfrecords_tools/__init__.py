"""The conversion tools (absl-py programs) of cgan-ct."""

import cgan_ct  # noqa: F401  (first: sets TensorFlow's CPU runtime before a job imports it)
