"""A deployment with user_config, for lightweight-update tests."""

import os

from starlette.requests import Request

from weir import serve


@serve.deployment(num_replicas=2, user_config={"greeting": "hello"})
class Greeter:
    def __init__(self, punctuation: str = "!") -> None:
        self.punctuation = punctuation
        self.greeting = "unset"

    def reconfigure(self, config: dict[str, str]) -> None:
        self.greeting = config["greeting"]

    def __call__(self, request: Request) -> dict[str, object]:
        return {"pid": os.getpid(), "text": self.greeting + self.punctuation}


app = Greeter.bind()
