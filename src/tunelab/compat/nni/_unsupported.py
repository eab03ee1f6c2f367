"""One ImportError for the parts of NNI that the shim does not provide."""

from __future__ import annotations

from typing import NoReturn

__all__ = ["unsupported"]


def unsupported(module: str, instead: str) -> NoReturn:
    """Raise the ImportError for an NNI module outside the trial API.

    Args:
        module: the module's ``__name__`` (``nni.nas`` or ``tunelab.compat.nni.nas``).
        instead: what to use instead, as a sentence fragment.
    """
    name = "nni" + module.split("nni", 1)[1] if ".nni." in module else module
    raise ImportError(
        f"{name} is not available: tunelab's nni compatibility covers the trial API only "
        f"(get_next_parameter, report_intermediate_result, report_final_result, ...); "
        f"{instead}",
        name=name,
    )
