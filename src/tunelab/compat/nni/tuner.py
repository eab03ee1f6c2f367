"""``nni.tuner``: the base class of NNI-style custom tuners.

A custom tuner written for NNI (``class MyTuner(nni.tuner.Tuner)``) runs in tunelab's manager
unchanged: tunelab wraps it (:mod:`tunelab.tuners._custom`) and calls the methods below as
NNI's dispatcher did. Standard library only, like the rest of the shim.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Tuner"]


class Tuner:
    """NNI's Tuner interface: subclasses override the methods they need.

    ``generate_parameters(parameter_id)`` returns a trial's parameters (or raises
    ``nni.NoMoreTrialError``), ``receive_trial_result(parameter_id, parameters, value)`` gets
    each final result (a number or a dict with ``default``), ``trial_end`` is called when a
    trial ends, ``update_search_space`` with the search space (a dict), ``import_data`` with
    earlier results ``[{"parameter": {...}, "value": ...}]``.
    """

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define generate_parameters")

    def generate_multiple_parameters(
        self, parameter_id_list: list[int], **kwargs: Any
    ) -> list[Any]:
        from . import NoMoreTrialError

        result = []
        for parameter_id in parameter_id_list:
            try:
                result.append(self.generate_parameters(parameter_id, **kwargs))
            except NoMoreTrialError:
                break
        return result

    def receive_trial_result(
        self, parameter_id: int, parameters: Any, value: Any, **kwargs: Any
    ) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define receive_trial_result")

    def receive_customized_trial_result(
        self, parameter_id: int, parameters: Any, value: Any, **kwargs: Any
    ) -> None:
        """A result of a trial the user added; ignored unless the tuner overrides this."""

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """A trial ended (successfully or not)."""

    def update_search_space(self, search_space: dict[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define update_search_space")

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Earlier results, ``[{"parameter": {...}, "value": ...}]``; ignored by default."""

    def load_checkpoint(self) -> None:
        """Kept for NNI code that calls it; tunelab rebuilds state by replaying history."""

    def save_checkpoint(self) -> None:
        """Kept for NNI code that calls it; tunelab rebuilds state by replaying history."""

    def _accept_customized_trials(self, accept: bool = True) -> None:
        self._accept_customized = accept
