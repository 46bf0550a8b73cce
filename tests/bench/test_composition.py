"""bench.composition's config: both apps, and the ingress's slots when asked."""

from __future__ import annotations

from bench.composition import composition_config
from weir.config.schema import ServeDeploySchema


def test_the_ingress_keeps_rays_default_slots_unless_asked() -> None:
    default = ServeDeploySchema.model_validate(composition_config())
    assert [app.name for app in default.applications] == ["single", "composed"]
    assert all(not app.deployments for app in default.applications)
    wide = ServeDeploySchema.model_validate(composition_config(64))
    [forward] = wide.applications[1].deployments
    assert (forward.name, forward.max_ongoing_requests) == ("Forward", 64)
