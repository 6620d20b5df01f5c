"""API function: API Gateway REST (proxy) -> the FastAPI app via Mangum, for the buffered routes
(/v1/models, /healthz, ...). Chat and image routes go to functions/stream (true streaming)."""

# Imported at init (boosted CPU, not billed per request): the app itself is built on the first
# invocation, once the secret is readable.
import cdp.entry.api.app  # noqa: F401
import mangum  # noqa: F401
from cdp.entry.aws.runtime import api_handler

handler = api_handler()
