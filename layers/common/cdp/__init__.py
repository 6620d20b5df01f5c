"""coze-discord-proxy, serverless Python edition: OpenAI API answered by Coze bots through Discord."""

__version__ = "0.1.0"
