"""FastAPI app: OpenAI routes, health, auth, error mapping. Same app for uvicorn, Mangum and LWA."""
