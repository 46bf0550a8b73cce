"""The channel's FrameOutbox: frames written in one event-loop turn travel as one message."""

from __future__ import annotations

import asyncio

from weir.dataplane.transport import FrameOutbox
from weir.protos import weir_pb2 as pb


def test_frames_added_in_one_turn_are_one_message() -> None:
    async def main() -> list[list[int]]:
        outbox = FrameOutbox()
        taken: list[list[int]] = []

        async def writer() -> None:
            while (message := await outbox.take()) is not None:
                taken.append([frame.call_id for frame in message.batch])

        task = asyncio.get_running_loop().create_task(writer())
        for call_id in (1, 2, 3):  # one turn: the writer has not run yet
            outbox.add(call_id, request=pb.CallRequest(request_id=str(call_id)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        outbox.add(4, cancel=True)
        outbox.close()
        await asyncio.wait_for(task, 5)
        return taken

    assert asyncio.run(main()) == [[1, 2, 3], [4]]


def test_a_closed_outbox_still_hands_over_what_it_holds() -> None:
    async def main() -> tuple[pb.Frame | None, pb.Frame | None]:
        outbox = FrameOutbox()
        outbox.add(7, reply=pb.CallReply(body=b"x"), last=True)
        outbox.close()
        return await outbox.take(), await outbox.take()

    first, second = asyncio.run(main())
    assert first is not None and [(f.call_id, f.reply.body, f.last) for f in first.batch] == [
        (7, b"x", True)]
    assert second is None
