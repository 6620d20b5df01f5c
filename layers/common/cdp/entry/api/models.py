"""GET /v1/models and /v1/models/{id}: the models the caller's key may use."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cdp.app import errors as se
from cdp.entry.api.common import ApiKey
from cdp.entry.api.runtime import Runtime
from cdp.entry.openai.wire import model_entry

# Without a bot_config.json every model name is served by COZE_BOT_ID; /v1/models lists these.
DEFAULT_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4", "gpt-3.5-turbo", "o1-mini", "dall-e-3")
MODELS_CREATED = 1_700_000_000
OWNED_BY = "coze-discord-proxy"


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["openai"])

    def models_for(key: str | None) -> list[str]:
        """With bot_config.json: exactly the models this key may use; else the fixed popular names."""
        allowed = runtime.service.models_for(key)
        return list(DEFAULT_MODELS) if allowed is None else allowed

    @router.get("/v1/models")
    async def list_models(api_key: ApiKey) -> dict[str, Any]:
        return {"object": "list", "data": [model_entry(m, MODELS_CREATED, OWNED_BY) for m in models_for(api_key)]}

    @router.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, api_key: ApiKey) -> dict[str, Any]:
        if model_id not in models_for(api_key):
            raise se.model_not_found(model_id)
        return model_entry(model_id, MODELS_CREATED, OWNED_BY)

    return router
