"""`GET /v1/models`: the models the gateway serves, from the known-model list that validates every `model`."""

from __future__ import annotations

from openai_api.errors import ModelNotFound
from openai_api.http import OpenAIConsumer
from sessions_app.public import known_models

OWNED_BY = "llm-gateway"
CREATED = 0  # the gateway does not know when an operator began to offer a model


def model_object(model: str) -> dict[str, object]:
    return {"id": model, "object": "model", "created": CREATED, "owned_by": OWNED_BY}


class ModelsConsumer(OpenAIConsumer):
    methods = {"GET": "list_models"}

    async def list_models(self) -> None:
        await self.send_json(200, {"object": "list", "data": [model_object(m) for m in sorted(known_models())]})


class ModelConsumer(OpenAIConsumer):
    methods = {"GET": "retrieve_model"}

    async def retrieve_model(self) -> None:
        model = self.route_kwarg("model")
        if model not in known_models():
            raise ModelNotFound()
        await self.send_json(200, model_object(model))
