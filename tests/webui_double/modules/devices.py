"""Double of ``modules/devices.py``: CPU only."""

import contextlib

import torch

cpu = torch.device("cpu")
device = cpu
dtype = torch.float32


def torch_gc():
    pass


def autocast(disable=False):
    return contextlib.nullcontext()
