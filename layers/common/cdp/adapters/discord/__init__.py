"""Discord adapters: rest (the REST client), ratelimit, gateway (the CDP bot's session), recorder
(Coze replies -> ReplyStore), proxy (PROXY_URL for the gateway). Import from those modules."""
