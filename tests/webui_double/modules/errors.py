"""``errors.report``/``display``: print the problem and let the caller go on, as the webui does.

Double-only: every message is also kept in ``reported`` so tests can tell "nothing went wrong" from
"an exception was swallowed".
"""

import sys
import traceback

reported: list[str] = []


def report(message: str, *, exc_info: bool = False) -> None:
    text = message
    if exc_info:
        text += "\n" + traceback.format_exc()
    reported.append(text)
    for line in text.splitlines():
        print("***", line, file=sys.stderr)


def display(e: Exception, task, *, full_traceback=False):
    report(f"{task or 'error'}: {type(e).__name__}: {e}", exc_info=True)
