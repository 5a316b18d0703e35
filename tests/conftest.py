"""Test setup: make the repo root and the tests folder importable, and keep CPU runs small."""

import os
import sys

import torch

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
for path in (REPO_ROOT, TESTS_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)

torch.set_num_threads(min(2, os.cpu_count() or 1))
