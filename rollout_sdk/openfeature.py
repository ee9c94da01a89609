"""RolloutProvider: RolloutClient behind the OpenFeature SDK (needs `openfeature-sdk`).

    from openfeature import api
    from rollout_sdk import RolloutClient
    from rollout_sdk.openfeature import RolloutProvider

    api.set_provider(RolloutProvider(RolloutClient()))
    flags = api.get_client()
    context = EvaluationContext("dana", {"workspace_id": "acme", "internal": False})
    flags.get_boolean_value("google", False, context)

The targeting key is the actor; `workspace_id` and `internal` come from the attributes.
Reasons: DISABLED, TARGETING_MATCH, SPLIT, STALE, ERROR (and DEFAULT for a feature never
initialised); metadata carries the percent. Status events: ready, stale, error.
"""

from __future__ import annotations

from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider import AbstractProvider, Metadata

from rollout_sdk.client import ERROR_HEALTH, READY, STALE_HEALTH, Evaluation, RolloutClient
from rollout_sdk.state import ERROR, STALE

__all__ = ["RolloutProvider"]

_METADATA = Metadata(name="rollout")
_CACHED_DETAILS = 256


class RolloutProvider(AbstractProvider):
    """Boolean flags from a RolloutClient; other flag types are a TYPE_MISMATCH."""

    def __init__(self, client: RolloutClient, ready_timeout: float = 5.0) -> None:
        super().__init__()
        self.client = client
        self._ready_timeout = ready_timeout
        # per (state, value, reason): FlagResolutionDetails built once, handed out again
        self._details: dict[tuple[object, bool, str], FlagResolutionDetails[bool]] = {}
        client.add_listener(self._on_health)

    def get_metadata(self) -> Metadata:
        return _METADATA

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Wait (in OpenFeature's initialisation thread) for the client's first read."""
        if not self.client.wait_ready(self._ready_timeout):
            from openfeature.exception import ProviderNotReadyError

            raise ProviderNotReadyError(
                f"no flags read from Redis within {self._ready_timeout:g} s "
                f"({self.client.status().last_error or 'no answer yet'}); answering False"
            )

    def shutdown(self) -> None:
        self.client.close()

    def _on_health(self, health: str, message: str | None) -> None:
        if not hasattr(self, "_on_emit"):
            return  # not registered with OpenFeature (yet)
        details = ProviderEventDetails(message=message)
        if health == READY:
            self.emit_provider_ready(details)
        elif health == STALE_HEALTH:
            self.emit_provider_stale(details)
        elif health == ERROR_HEALTH:
            self.emit_provider_error(details)

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        if evaluation_context is None:
            state, evaluation = self.client.evaluate_unit(flag_key, None, None, False)
        else:
            attributes = evaluation_context.attributes
            state, evaluation = self.client.evaluate_unit(
                flag_key,
                evaluation_context.targeting_key,
                attributes.get("workspace_id"),
                attributes.get("internal") is True,
            )
        key = (state, evaluation.value, evaluation.reason)
        details = self._details.get(key)
        if details is None:
            details = _details(evaluation)
            if state is not None and evaluation.reason not in (STALE, ERROR):
                if len(self._details) >= _CACHED_DETAILS:
                    self._details.clear()
                self._details[key] = details  # the same answer from the same state
        return details

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return _mismatch(flag_key, default_value)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return _mismatch(flag_key, default_value)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return _mismatch(flag_key, default_value)

    def resolve_object_details(
        self, flag_key: str, default_value: Any, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[Any]:
        return _mismatch(flag_key, default_value)


def _details(evaluation: Evaluation) -> FlagResolutionDetails[bool]:
    value, reason, percent, error = evaluation
    code = None
    if reason == ERROR:
        code = ErrorCode.PROVIDER_NOT_READY if "not loaded" in (error or "") else ErrorCode.GENERAL
    return FlagResolutionDetails(
        value, code, error, reason, "on" if value else "off", {"percent": percent}
    )


def _mismatch(flag_key: str, default_value: Any) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(
        default_value,
        ErrorCode.TYPE_MISMATCH,
        f"{flag_key} is a boolean rollout flag; ask with get_boolean_value",
        ERROR,
    )
