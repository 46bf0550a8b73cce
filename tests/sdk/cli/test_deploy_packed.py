"""`weir run`'s first deploy: code packed while the cluster started, then uploaded and sent."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest

from weir.cli.admin_client import AdminClient, CodeNotShipped
from weir.cli.commands import deploy_packed
from weir.packages.archive import PackageTooLarge
from weir.packages.shipping import PackedCode
from weir.protos import weir_pb2 as pb


class RecordingClient(AdminClient):
    """Records deploys instead of calling a controller."""

    def __init__(self) -> None:
        super().__init__("127.0.0.1:1")
        self.deploys: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def deploy(self, config: dict[str, Any], **kwargs: Any) -> pb.DeployReply:
        self.deploys.append((config, kwargs))
        return pb.DeployReply(message="deployed: 1 app(s) changed")


def packed(value: tuple[dict[str, Any], list[PackedCode]] | BaseException
           ) -> Future[tuple[dict[str, Any], list[PackedCode]]]:
    future: Future[tuple[dict[str, Any], list[PackedCode]]] = Future()
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
    return future


def test_the_rewritten_config_is_sent_without_packing_it_again() -> None:
    client = RecordingClient()
    config = {"applications": [{"import_path": "m:app", "runtime_env": {}}]}
    reply = deploy_packed(client, packed((config, [])), partial=False)
    assert reply.message == "deployed: 1 app(s) changed"
    assert client.deploys == [(config, {"partial": False, "ship_code": False})]


def test_code_that_could_not_be_packed_deploys_nothing() -> None:
    client = RecordingClient()
    with pytest.raises(CodeNotShipped, match="over the limit"):
        deploy_packed(client, packed(PackageTooLarge("working_dir: over the limit")),
                      partial=False)
    assert client.deploys == []
