"""Pure domain logic: no I/O, no imports from api/, discord/, store adapters, boto3 or httpx."""
