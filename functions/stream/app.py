"""Stream function: the same FastAPI app, served by uvicorn behind the AWS Lambda Web Adapter
(AWS_LWA_INVOKE_MODE=response_stream), so /v1/chat/completions streams token by token through
API Gateway REST response streaming (ResponseTransferMode: STREAM, up to 15 minutes)."""

# Imported at init (as functions/api does): the modules need no configuration. The app itself is built
# on the first request, once the secret is readable; a configuration failure then answers an
# OpenAI-shaped 503 instead of failing the import (which API Gateway would show as a bare 502).
import cdp.adapters.store.dynamodb  # noqa: F401
import cdp.entry.api.app  # noqa: F401
import cdp.entry.bootstrap  # noqa: F401
from cdp.entry.aws.runtime import stream_app

app = stream_app()
