"""GET /v1/models and /v1/models/{id}: the models the caller's key may use, as chat sees them
(domain/routing.Router.listed / serves: without bot_config.json and STRICT_MODELS, every name is served
by COZE_BOT_ID, so /v1/models/{any name} answers it too; /v1/models lists the popular names)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cdp.app import errors as se
from cdp.entry.api.common import ApiKey
from cdp.entry.api.runtime import Runtime
from cdp.entry.openai.wire import model_entry

MODELS_CREATED = 1_700_000_000
OWNED_BY = "coze-discord-proxy"


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(tags=["openai"])

    @router.get("/v1/models")
    async def list_models(api_key: ApiKey) -> dict[str, Any]:
        names = runtime.service.listed_models(api_key)
        return {"object": "list", "data": [model_entry(m, MODELS_CREATED, OWNED_BY) for m in names]}

    @router.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str, api_key: ApiKey) -> dict[str, Any]:
        if not runtime.service.serves_model(model_id, api_key):
            raise se.model_not_found(model_id)
        return model_entry(model_id, MODELS_CREATED, OWNED_BY)

    return router
