"""Double of ``modules/call_queue.py``: the one lock that serialises GPU work, and the gradio wrapper."""

from __future__ import annotations

import threading
from functools import wraps

from modules import shared

queue_lock = threading.RLock()  # the webui's is a FIFO lock; only mutual exclusion matters to the tests


def wrap_gradio_gpu_call(func, extra_outputs=None):
    @wraps(func)
    def f(*args, **kwargs):
        with queue_lock:
            shared.state.begin(job=args[0] if args and isinstance(args[0], str) else None)
            try:
                return func(*args, **kwargs)
            finally:
                shared.state.end()

    return f
