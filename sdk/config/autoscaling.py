"""A deployment's autoscaling options: Ray Serve's `autoscaling_config`, same names and
defaults, and `num_replicas: "auto"`.

Why the deployment schema keeps `autoscaling_config` as the plain mapping the user wrote,
checked here, rather than as a nested model: a deployment's options travel as JSON (the
decorator's options inside a built app, a config entry in etcd, a replica's spec), and a
config entry is an override that must hold only the fields the user set. A mapping keeps
both properties for free; `autoscaling_of` turns the merged options into the
`AutoscalingConfig` the controller decides with, defaults filled in.

Scaling is one concept with two spellings, `num_replicas: <n>` and autoscaling, so a layer
of options that sets either one replaces both from the layers below it
(`without_scaling_of`): a config entry with `autoscaling_config` autoscales a deployment
whose decorator said `num_replicas=2`, and one with `num_replicas: 3` pins one whose
decorator autoscaled. Within one layer, setting both is refused, as in Ray Serve, unless
num_replicas is "auto" (whose defaults autoscaling_config then overrides).
"""

from __future__ import annotations

import difflib
import threading
import warnings
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    ValidationError,
    model_validator,
)

#: `num_replicas: "auto"` means these, under whatever autoscaling_config sets (Ray Serve's
#: defaults for it; a bare autoscaling_config keeps max_replicas at 1, as in Ray).
AUTO_DEFAULTS: Mapping[str, Any] = {"target_ongoing_requests": 2.0, "min_replicas": 1,
                                    "max_replicas": 100}
AUTO = "auto"
#: Ray Serve's old name for target_ongoing_requests, accepted with a warning.
OLD_TARGET_NAME = "target_num_ongoing_requests_per_replica"
#: The two options that say how many replicas a deployment runs.
SCALING_OPTIONS = ("num_replicas", "autoscaling_config")

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Delay = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class AutoscalingConfig(BaseModel):
    """Ray Serve's autoscaling options, with its defaults (`ray.serve.config.
    AutoscalingConfig`). The decision that uses them is `weir.controller.autoscaler`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    min_replicas: StrictInt = Field(default=1, ge=0)
    #: Replicas a new deployment starts with (None: min_replicas).
    initial_replicas: StrictInt | None = Field(default=None, ge=0)
    max_replicas: StrictInt = Field(default=1, ge=1)
    #: Ongoing plus queued requests per replica the autoscaler aims for.
    target_ongoing_requests: PositiveFloat = 2.0
    #: Accepted for Ray's configs; Weir's replicas and callers report their load as it
    #: changes (within 50 ms), so the leader always has fresher figures than this asks for.
    metrics_interval_s: PositiveFloat = 10.0
    #: The window the load is aggregated over.
    look_back_period_s: PositiveFloat = 30.0
    #: Ray's older names of the two factors below (used when those are not set).
    smoothing_factor: PositiveFloat = 1.0
    upscale_smoothing_factor: PositiveFloat | None = None
    downscale_smoothing_factor: PositiveFloat | None = None
    #: Gains applied to each step: the step is factor * (desired - current).
    upscaling_factor: PositiveFloat | None = None
    downscaling_factor: PositiveFloat | None = None
    #: How long a decision must hold before it is applied.
    upscale_delay_s: Delay = 30.0
    downscale_delay_s: Delay = 600.0
    #: For the last step, from 1 replica to 0 (None: downscale_delay_s).
    downscale_to_zero_delay_s: Delay | None = None
    #: How the window's load is aggregated.
    aggregation_function: Literal["mean", "max", "min"] = "mean"

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be greater than or "
                             f"equal to min_replicas ({self.min_replicas})")
        if self.initial_replicas is not None and not (
                self.min_replicas <= self.initial_replicas <= self.max_replicas):
            raise ValueError(f"initial_replicas ({self.initial_replicas}) must lie between "
                             f"min_replicas ({self.min_replicas}) and max_replicas "
                             f"({self.max_replicas})")
        return self

    @property
    def upscale_gain(self) -> float:
        """The factor applied to upscaling steps (upscaling_factor, else the old names)."""
        return self.upscaling_factor or self.upscale_smoothing_factor or self.smoothing_factor

    @property
    def downscale_gain(self) -> float:
        """The factor applied to downscaling steps."""
        return (self.downscaling_factor or self.downscale_smoothing_factor
                or self.smoothing_factor)

    @property
    def start_replicas(self) -> int:
        """The replicas a deployment with no replica yet starts with."""
        return self.min_replicas if self.initial_replicas is None else self.initial_replicas

    @property
    def to_zero_delay_s(self) -> float:
        """How long no traffic must last before the last replica stops."""
        if self.downscale_to_zero_delay_s is None:
            return self.downscale_delay_s
        return self.downscale_to_zero_delay_s

    def clamp(self, replicas: int) -> int:
        """`replicas` within [min_replicas, max_replicas]."""
        return max(self.min_replicas, min(self.max_replicas, replicas))


# ----------------------------------------------------------------- checking the options

_warned_old_name = threading.Event()


def _renamed(value: Mapping[str, Any]) -> dict[str, Any]:
    """`value` with Ray's old name of target_ongoing_requests replaced (warning once)."""
    out = dict(value)
    if OLD_TARGET_NAME not in out:
        return out
    old = out.pop(OLD_TARGET_NAME)
    if "target_ongoing_requests" in out and out["target_ongoing_requests"] != old:
        raise ValueError(f"{OLD_TARGET_NAME} is the old name of target_ongoing_requests: "
                         "give only target_ongoing_requests")
    out["target_ongoing_requests"] = old
    if not _warned_old_name.is_set():
        _warned_old_name.set()
        warnings.warn(f"autoscaling_config.{OLD_TARGET_NAME} is deprecated (as in Ray "
                      "Serve): it is read as target_ongoing_requests; rename it",
                      FutureWarning, stacklevel=2)
    return out


def _problem(error: Mapping[str, Any]) -> str:
    """One validation error of `AutoscalingConfig`, as "<field>: <what is wrong>"."""
    where = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(where, list(AutoscalingConfig.model_fields), n=1)
        return f"{where}: unknown field" + (f" (did you mean {close[0]}?)" if close else "")
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message.replace("Input should be", "must be")
    if not where:
        return message
    return f"{where}: {message} (got {error.get('input')!r})"


def parse_autoscaling_config(value: Mapping[str, Any]) -> AutoscalingConfig:
    """The `AutoscalingConfig` a mapping asks for (Ray's old name accepted). ValueError
    names each bad field, e.g. "max_replicas: must be greater than or equal to 1 (got 0)".
    """
    try:
        return AutoscalingConfig.model_validate(_renamed(value))
    except ValidationError as exc:
        raise ValueError("; ".join(_problem(e) for e in exc.errors(include_url=False))
                         ) from None


def check_autoscaling_config(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The deployment schema's validator of `autoscaling_config`: the mapping the user wrote
    (only the fields set, the old name renamed), or ValueError naming each bad field."""
    if value is None:
        return None
    parse_autoscaling_config(value)
    return _renamed(value)


def check_num_replicas(value: Any) -> int | str:
    """`num_replicas`: a whole number >= 0, or "auto" (autoscaling with `AUTO_DEFAULTS`)."""
    if value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError('must be a valid integer >= 0, or "auto" to autoscale')
    if value < 0:
        raise ValueError("must be greater than or equal to 0")
    return value


#: The type of `num_replicas` in the deployment schema.
NumReplicas = Annotated[int | Literal["auto"], PlainValidator(check_num_replicas)]


# ----------------------------------------------------------------- merged options


def autoscaling_of(options: Mapping[str, Any]) -> AutoscalingConfig | None:
    """The autoscaling a deployment's merged options ask for, or None for a fixed
    num_replicas. Pure; the options were checked when they were given."""
    given = options.get("autoscaling_config")
    if options.get("num_replicas") == AUTO:
        return parse_autoscaling_config({**AUTO_DEFAULTS, **_renamed(given or {})})
    if given is not None:
        return parse_autoscaling_config(given)
    return None


def without_scaling_of(base: Mapping[str, Any], layer: Mapping[str, Any] | None
                       ) -> dict[str, Any]:
    """`base` options without num_replicas and autoscaling_config when `layer` (the options
    merged over them) sets either: see the module docstring."""
    if layer is None or not any(layer.get(k) is not None for k in SCALING_OPTIONS):
        return dict(base)
    return {k: v for k, v in base.items() if k not in SCALING_OPTIONS}


def scaling_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Of a deployment's merged options, the scaling ones a complete config writes out
    (`weir build`): num_replicas, or autoscaling_config (with num_replicas if "auto")."""
    out: dict[str, Any] = {}
    if options.get("num_replicas") == AUTO or options.get("autoscaling_config") is None:
        out["num_replicas"] = options.get("num_replicas", 1)
    if options.get("autoscaling_config") is not None:
        out["autoscaling_config"] = options["autoscaling_config"]
    return out

