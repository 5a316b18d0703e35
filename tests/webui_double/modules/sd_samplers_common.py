"""Shared sampler pieces: the exception ``CFGDenoiser`` raises when the user interrupts."""


class InterruptedException(BaseException):
    pass
