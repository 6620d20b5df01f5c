"""API function: API Gateway REST (proxy) -> the FastAPI app via Mangum, for the buffered routes
(/v1/models, /healthz, ...). Chat and image routes go to functions/stream (true streaming)."""

from cdp.aws.runtime import api_handler

# Imported at init (boosted CPU, not billed per request): the app itself is built on the first
# invocation, once the secret is readable.
import cdp.api.app  # noqa: E402,F401
import mangum  # noqa: E402,F401

handler = api_handler()
