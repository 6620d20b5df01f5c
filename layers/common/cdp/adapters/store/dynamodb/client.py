"""The DynamoDB client and the calls every DynamoDB adapter makes through it.

One botocore client per (endpoint, region) per process (botocore clients are thread-safe), called
from a small dedicated thread pool. boto3 is imported on first use: it is the biggest import of the
layer, and Lambdas that never touch DynamoDB should not pay for it. The endpoint comes from
AWS_ENDPOINT_URL_DYNAMODB / AWS_ENDPOINT_URL (cdp.settings), so moto, DynamoDB Local and LocalStack work.

`TableAdapter` is the base of every adapter: its reads and writes are counted in `STATS`, a failed
condition is an answer (None), and a partition is read across every page.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from cdp.settings import Settings

CONDITION_FAILURES = ("ConditionalCheckFailedException", "TransactionCanceledException")


# -- counters --------------------------------------------------------------------------------------
@dataclass
class DynamoStats:
    """Requests and consumed capacity units of this process (bench reports them per chat request)."""

    reads: int = 0  # read requests (GetItem, Query pages)
    writes: int = 0  # write requests (PutItem, UpdateItem, DeleteItem), including failed conditions
    read_units: float = 0.0
    write_units: float = 0.0

    def snapshot(self) -> dict[str, float]:
        return {"reads": self.reads, "writes": self.writes, "read_units": self.read_units,
                "write_units": self.write_units}

    def reset(self) -> None:
        self.reads = self.writes = 0
        self.read_units = self.write_units = 0.0


STATS = DynamoStats()
_stats_lock = threading.Lock()


def count(kind: str, response: dict | None) -> None:
    """Add one request ("read" or "write") and its consumed capacity to STATS."""
    units = float(((response or {}).get("ConsumedCapacity") or {}).get("CapacityUnits") or 0.0)
    with _stats_lock:
        if kind == "read":
            STATS.reads += 1
            STATS.read_units += units
        else:
            STATS.writes += 1
            STATS.write_units += units


# -- client ----------------------------------------------------------------------------------------
_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def dynamodb_client(settings: Settings | None = None):
    """One botocore client per (endpoint, region) per process; thread-safe."""
    settings = settings or Settings()
    key = (settings.dynamodb_endpoint, settings.aws_region or "us-east-1")
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                import boto3
                from botocore.config import Config

                config = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=3,
                                read_timeout=10, max_pool_connections=32, tcp_keepalive=True)
                client = boto3.session.Session().client(
                    "dynamodb", region_name=key[1], endpoint_url=key[0], config=config)
                _clients[key] = client
    return client


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _clients_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="cdp-ddb")
    return _executor


async def call(fn: Callable[..., dict], /, **kwargs: Any) -> dict:
    """Run one blocking botocore call (`client.put_item`...) in the DynamoDB thread pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool(), lambda: fn(**kwargs))


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ("ResourceNotFoundException"...), else ""."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "")
    return ""


def is_condition_failure(exc: BaseException) -> bool:
    return error_code(exc) in CONDITION_FAILURES


async def describe_table(table: str, settings: Settings | None = None) -> dict:
    """DescribeTable's "Table" (TableStatus...); raises like boto3 (`cdp doctor` reports the code)."""
    resp = await call(dynamodb_client(settings).describe_table, TableName=table)
    return resp["Table"]


# -- attribute values (tiny, explicit: we know every attribute's type) -----------------------------
def string(v: str) -> dict:
    return {"S": v}


def number(v: float) -> dict:
    return {"N": str(v)}


def strings(values: Iterable[object]) -> dict:
    return {"L": [{"S": str(v)} for v in values]}


def number_of(item: dict, name: str) -> float | None:
    v = item.get(name)
    return float(v["N"]) if v and "N" in v else None


# -- base of the adapters --------------------------------------------------------------------------
class TableAdapter:
    """One table of an adapter (the state table unless `REPLIES_TABLE`), its client (created on first
    use), and the calls made on it. Every call names the table and asks for the consumed capacity,
    which `STATS` counts."""

    REPLIES_TABLE = False

    def __init__(self, settings: Settings | None = None, client=None) -> None:
        self.settings = settings or Settings()
        self.table = self.settings.replies_table if self.REPLIES_TABLE else self.settings.state_table
        self._client = client

    @property
    def client(self):
        if self._client is None:
            self._client = dynamodb_client(self.settings)
        return self._client

    async def read(self, fn: Callable[..., dict], **kwargs: Any) -> dict:
        resp = await call(fn, TableName=self.table, ReturnConsumedCapacity="TOTAL", **kwargs)
        count("read", resp)
        return resp

    async def write(self, fn: Callable[..., dict], **kwargs: Any) -> dict:
        resp = await call(fn, TableName=self.table, ReturnConsumedCapacity="TOTAL", **kwargs)
        count("write", resp)
        return resp

    async def write_if(self, fn: Callable[..., dict], **kwargs: Any) -> dict | None:
        """A conditional write (kwargs hold the ConditionExpression); None when the condition failed."""
        try:
            return await self.write(fn, **kwargs)
        except Exception as exc:
            if is_condition_failure(exc):
                count("write", getattr(exc, "response", None))
                return None
            raise

    async def partition(self, pk: str) -> list[dict]:
        """Every item whose pk is `pk` (strongly consistent, across every page)."""
        items: list[dict] = []
        kwargs: dict[str, Any] = {"ConsistentRead": True, "KeyConditionExpression": "pk = :p",
                                  "ExpressionAttributeValues": {":p": string(pk)}}
        while True:
            resp = await self.read(self.client.query, **kwargs)
            items.extend(resp.get("Items", ()))
            last = resp.get("LastEvaluatedKey")
            if not last:
                return items
            kwargs["ExclusiveStartKey"] = last
