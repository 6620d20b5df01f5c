"""Stream function: the same FastAPI app, served by uvicorn behind the AWS Lambda Web Adapter
(AWS_LWA_INVOKE_MODE=response_stream), so /v1/chat/completions streams token by token through
API Gateway REST response streaming (ResponseTransferMode: STREAM, up to 15 minutes)."""

from cdp.entry.aws.runtime import stream_app

app = stream_app()
