"""A FastAPI ingress with WebSocket routes, written as Ray's docs write them."""

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from weir import serve

app = FastAPI()
#: Close codes the app saw from clients, per replica process (read back through /closes).
CLOSES: list[int] = []


@serve.deployment
@serve.ingress(app)
class Chat:
    def __init__(self) -> None:
        self.greeting = "echo"

    @app.websocket("/ws")
    async def echo(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                if text == "bye":
                    await websocket.close(code=4001, reason="asked to leave")
                    return
                await websocket.send_text(f"{self.greeting}: {text}")
        except WebSocketDisconnect as exc:
            CLOSES.append(exc.code)

    @app.websocket("/refuse")
    async def refuse(self, websocket: WebSocket) -> None:
        await websocket.close(code=4403)

    @app.get("/closes")
    def closes(self) -> list[int]:
        return CLOSES


deployment = Chat.bind()
