"""Errors the core raises. Every message names the file (or field) it is about."""


class SliderError(Exception):
    """Base class for problems a user can fix (bad file, bad setting)."""


class SliderFileError(SliderError):
    """A slider file is missing, unreadable, not a LoRA, or doesn't fit the model."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
