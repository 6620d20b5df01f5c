"""Settings on AWS: environment (template.yaml) + one Secrets Manager secret (JSON) named by
CDP_SECRET_ID, read with powertools parameters (cached for CDP_SECRET_MAX_AGE seconds, default 300).

The secret holds the settings that are secrets (cdp.settings.SECRET_SETTINGS: USER_AUTHORIZATION,
BOT_TOKEN, PROXY_SECRET, NOTIFY_TELEGRAM_BOT_TOKEN, PROXY_URL); other keys and empty values are
ignored, so the environment can still provide them (local runs, tests).
"""

from __future__ import annotations

import os

from cdp.settings import SECRET_SETTINGS, Settings, load_settings


def secret_values(secret_id: str | None = None, max_age: int | None = None) -> dict[str, str]:
    secret_id = secret_id if secret_id is not None else os.environ.get("CDP_SECRET_ID", "")
    if not secret_id:
        return {}
    from aws_lambda_powertools.utilities import parameters

    age = max_age if max_age is not None else int(os.environ.get("CDP_SECRET_MAX_AGE", "300"))
    raw = parameters.get_secret(secret_id, transform="json", max_age=age)
    if not isinstance(raw, dict):
        raise TypeError("the CDP secret must be a JSON object such as {\"BOT_TOKEN\": \"...\"}")
    return {k: str(v) for k, v in raw.items() if k in SECRET_SETTINGS and v not in (None, "")}


def load_aws_settings(**overrides: object) -> Settings:
    """cdp.settings.load_settings with the secret's values (they win over the environment)."""
    return load_settings(**{**secret_values(), **overrides})
