"""OpenAI wire format: request models, response/chunk builders, error shapes, SSE framing."""
