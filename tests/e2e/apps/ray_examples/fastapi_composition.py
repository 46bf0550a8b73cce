"""Ray's model composition with a FastAPI ingress: handles to two deployments, a pydantic
model and a dataclass returned, errors caught by their own type around `.result()`."""

import dataclasses
import datetime
import os

import requests
from fastapi import FastAPI
from pydantic import BaseModel

from weir import serve
from weir.serve.handle import DeploymentHandle, DeploymentResponse

URL = os.environ.get("EXAMPLE_URL", "http://localhost:8000")
app = FastAPI()


class Prediction(BaseModel):
    label: str
    score: float
    at: datetime.datetime


@dataclasses.dataclass
class Stats:
    calls: int
    model: str


@serve.deployment
class Preprocessor:
    def __call__(self, text: str) -> str:
        if not text:
            raise ValueError("empty text")
        return text.strip().lower()


@serve.deployment
class Classifier:
    def __call__(self, text: str) -> Prediction:
        return Prediction(label="positive" if "good" in text else "negative", score=0.9,
                          at=datetime.datetime(2024, 1, 1, 12, 0))


@serve.deployment
@serve.ingress(app)
class Api:
    def __init__(self, preprocessor: DeploymentHandle, classifier: DeploymentHandle) -> None:
        self.preprocessor = preprocessor
        self.classifier = classifier
        self.calls = 0

    @app.get("/classify")
    async def classify(self, text: str) -> Prediction:
        self.calls += 1
        cleaned: DeploymentResponse = self.preprocessor.remote(text)
        return await self.classifier.remote(cleaned)

    @app.get("/stats")
    def stats(self) -> Stats:
        return Stats(calls=self.calls, model="toy")

    @app.get("/safe")
    async def safe(self, text: str = "") -> str:
        try:
            return await self.preprocessor.remote(text)
        except ValueError as exc:
            return f"refused: {exc.args[0]}"


serve.run(Api.bind(Preprocessor.bind(), Classifier.bind()), name="composition",
          route_prefix="/composition")
reply = requests.get(f"{URL}/composition/classify", params={"text": "  Good movie "}).json()
assert reply == {"label": "positive", "score": 0.9, "at": "2024-01-01T12:00:00"}, reply
assert requests.get(f"{URL}/composition/stats").json() == {"calls": 1, "model": "toy"}
assert requests.get(f"{URL}/composition/safe").json() == "refused: empty text"

# From the driver: the replica's ValueError is a ValueError here too.
preprocessor = serve.get_deployment_handle("Preprocessor", app_name="composition")
try:
    preprocessor.remote("").result()
except ValueError as exc:
    assert "empty text" in str(exc) and "Traceback" in str(exc)
else:
    raise AssertionError("no ValueError")
print("ok")
