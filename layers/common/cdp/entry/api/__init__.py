"""The HTTP API: one FastAPI app (app.create_app) for uvicorn, Mangum and LWA; a router per module."""
