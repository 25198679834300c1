"""Upstream noise, silenced: the few messages that libraries print on every command and that say nothing to our users.

Every entry point imports this module first (before transformers, which imports torchao when it is installed), and
`pipelines/__init__.py` does too, so the filters are in place before the messages can be logged. Each filter drops
one message of one logger, matched on the logger's own format string; every other message of those loggers, and
every other logger, is left as it is. Users who learn to skip stderr miss the one sentence that matters (#29).

Silenced, and why:

- ``torch.utils._pytree``: "<enum 'KernelPreference'> is an Enum subclass ... Calling register_constant() on Enum
  subclasses is deprecated" (and the same for 'ScaleCalculationMode'), twice per command. torchao 0.18 registers
  its enums with torch 2.14, which deprecates that; transformers imports torchao in `modeling_utils` whenever it is
  installed (the ``shrink`` extra), so no command can avoid the import. Only enums of torchao's are silenced.
- ``torch.utils.cpp_extension``: "No CUDA runtime is found, using CUDA_HOME=..." on a machine with a CUDA toolkit
  but no GPU, logged when optimum-quanto (shrink's int8) imports torch's extension builder. We build no extension,
  and the device in use is chosen and reported by `pipelines.runtime`.

Remove a filter when the library stops logging its message (the filters then match nothing).
"""

from __future__ import annotations

import logging

# Logger name -> the start of the format string (``record.msg``) of the one message dropped from it.
SILENCED = {
    "torch.utils._pytree": "%s is an Enum subclass and is now natively supported by torch.compile",
    "torch.utils.cpp_extension": "No CUDA runtime is found",
}


class UpstreamNoiseFilter(logging.Filter):
    """Drops the record of `logger_name` whose format string starts with SILENCED's text for it; keeps the rest."""

    def __init__(self, logger_name: str) -> None:
        super().__init__()
        self.logger_name = logger_name
        self.start = SILENCED[logger_name]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != self.logger_name or not str(record.msg).startswith(self.start):
            return True
        if self.logger_name == "torch.utils._pytree":  # torchao's enums only; another library's stays visible
            registered = record.args[0] if isinstance(record.args, tuple) and record.args else None
            return not getattr(registered, "__module__", "").startswith("torchao.")
        return False


def silence_upstream_noise() -> None:
    """Attach each filter to its logger, once (importing this module does it)."""
    for name in SILENCED:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, UpstreamNoiseFilter) for existing in logger.filters):
            logger.addFilter(UpstreamNoiseFilter(name))


silence_upstream_noise()
