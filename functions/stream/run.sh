#!/bin/sh
# Started by the Lambda Web Adapter (AWS_LAMBDA_EXEC_WRAPPER=/opt/bootstrap); it proxies each
# invocation to this server on $PORT and streams the response back.
cd "${LAMBDA_TASK_ROOT:-$(dirname "$0")}"
exec python -m uvicorn --host 127.0.0.1 --port "${PORT:-8080}" --no-access-log --timeout-graceful-shutdown 5 app:app
