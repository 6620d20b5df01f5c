"""Settings on AWS: environment (template.yaml) + one Secrets Manager secret (JSON) named by
CDP_SECRET_ID, read with powertools parameters (cached for CDP_SECRET_MAX_AGE seconds, default 300).

The secret holds USER_AUTHORIZATION, BOT_TOKEN, PROXY_SECRET, NOTIFY_TELEGRAM_BOT_TOKEN; empty
values are ignored so the environment can still provide them (local runs, tests).
"""

from __future__ import annotations

import os

SECRET_KEYS = ("USER_AUTHORIZATION", "BOT_TOKEN", "PROXY_SECRET", "NOTIFY_TELEGRAM_BOT_TOKEN")


def secret_values(secret_id: str | None = None, max_age: int | None = None) -> dict[str, str]:
    secret_id = secret_id if secret_id is not None else os.environ.get("CDP_SECRET_ID", "")
    if not secret_id:
        return {}
    from aws_lambda_powertools.utilities import parameters

    age = max_age if max_age is not None else int(os.environ.get("CDP_SECRET_MAX_AGE", "300"))
    raw = parameters.get_secret(secret_id, transform="json", max_age=age)
    if not isinstance(raw, dict):
        raise TypeError("the CDP secret must be a JSON object such as {\"BOT_TOKEN\": \"...\"}")
    return {k: str(v) for k, v in raw.items() if k in SECRET_KEYS and v not in (None, "")}


def load_aws_settings(**overrides):
    """cdp.settings.load_settings with the secret's values (they win over the environment)."""
    from cdp.settings import load_settings

    return load_settings(**{**secret_values(), **overrides})
