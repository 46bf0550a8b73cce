"""What a handle call does before it goes out: which arguments wait for other calls'
results, and how a reply's value comes back."""

from __future__ import annotations

import asyncio

from weir.dataplane import payload
from weir.handle import DeploymentResponse, _holds_response, _resolve, decode_reply
from weir.protos import weir_pb2 as pb


def test_only_arguments_holding_a_response_are_resolved() -> None:
    async def main() -> None:
        future = asyncio.get_running_loop().create_future()
        future.set_result(7)
        response = DeploymentResponse(future)
        assert not _holds_response(((1, "a", None), {"k": [2, {"x": 3}]}))
        for held in [(response,), ([{"k": response}],), {"k": (response,)}]:
            assert _holds_response(held)
        assert await _resolve(([{"k": response}], {"j": response})) == ([{"k": 7}], {"j": 7})

    asyncio.run(main())


def test_a_reply_value_reads_back_however_it_was_pickled() -> None:
    for value in ["ok", {"a": [1, 2]}, {1, 2}]:
        reply = pb.CallReply(outcome=pb.OK, pickled=payload.dumps(value))
        assert decode_reply(reply) == value
    assert decode_reply(pb.CallReply(outcome=pb.OK)) is None
