"""Which Coze bot answers a request: bot_config.json entries matched by the caller's key and model.

Pure rules (no I/O). The file is read and validated by cdp.adapters.botconfig; the service asks `Router`.

As in the original: an entry matches when its `proxySecret` equals the key the caller sent
(`Authorization: Bearer <key>`) and its `model` list contains the request's model; one match is
picked at random. Without a bot config every model name is served by COZE_BOT_ID, and /v1/models
lists DEFAULT_MODELS; `strict` (STRICT_MODELS) serves only those. `listed` and `serves` are the one
truth that /v1/models, /v1/models/{id} and chat share.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

# Without a bot_config.json, /v1/models lists these names (all served by COZE_BOT_ID).
DEFAULT_MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4-turbo", "gpt-4", "gpt-3.5-turbo", "o1-mini", "dall-e-3")


@dataclass(frozen=True)
class BotEntry:
    """One entry of bot_config.json (`index` = its position in the file, for messages)."""

    proxy_secret: str
    coze_bot_id: str
    models: tuple[str, ...]
    channel_id: str | None = None
    message_max_token: int | None = None
    index: int = 0


class NoRoute(Exception):
    """No bot serves this model for this key (→ 404 model_not_found)."""


class AllRouteResting(Exception):
    """Bots serve this model for this key, but all of them are resting (bot limit)."""

    def __init__(self, bot_ids: list[str]) -> None:
        super().__init__(f"{len(bot_ids)} bot(s) resting")
        self.bot_ids = bot_ids


class Router:
    def __init__(self, entries: Sequence[BotEntry], default_bot_ids: Sequence[str],
                 rng: Callable[[Sequence[BotEntry]], BotEntry] = random.choice, *, strict: bool = False,
                 default_models: Sequence[str] = DEFAULT_MODELS) -> None:
        self.entries = list(entries)
        self.default_bot_ids = list(default_bot_ids)
        self._choice = rng
        self.strict = strict  # without a bot config: serve only `default_models`
        self.default_models = list(default_models)

    @property
    def configured(self) -> bool:
        """True when a bot_config.json is in use (routing by key + model)."""
        return bool(self.entries)

    def bot_ids(self) -> list[str]:
        """Every Coze bot id that may answer (the listener must recognise all of them)."""
        ids = list(dict.fromkeys([*self.default_bot_ids, *(e.coze_bot_id for e in self.entries)]))
        return ids

    def models_for(self, key: str | None) -> list[str] | None:
        """Model names this key may use, in file order; None without a bot config (any model)."""
        if not self.configured:
            return None
        names: dict[str, None] = {}
        for e in self.entries:
            if e.proxy_secret == (key or ""):
                for m in e.models:
                    names.setdefault(m, None)
        return list(names)

    def listed(self, key: str | None) -> list[str]:
        """The names /v1/models lists for this key: its bot_config models, else the default names."""
        allowed = self.models_for(key)
        return list(self.default_models) if allowed is None else allowed

    def serves(self, model: str, key: str | None) -> bool:
        """Whether chat serves this name for this key (resting bots aside): what /v1/models/{id} says."""
        if self.configured or self.strict:
            return model in self.listed(key)
        return True

    def candidates(self, model: str, key: str | None) -> list[BotEntry]:
        if not self.serves(model, key):
            return []
        if not self.configured:
            return [BotEntry("", bot, (model,), index=-1) for bot in self.default_bot_ids]
        return [e for e in self.entries if e.proxy_secret == (key or "") and model in e.models]

    def route(self, model: str, key: str | None, resting: Collection[str] = ()) -> BotEntry:
        """Pick one bot for (model, key) among those not resting. Raises NoRoute / AllRouteResting."""
        found = self.candidates(model, key)
        if not found:
            raise NoRoute(model)
        usable = [e for e in found if e.coze_bot_id not in resting]
        if not usable:
            raise AllRouteResting(sorted({e.coze_bot_id for e in found}))
        return self._choice(usable)
