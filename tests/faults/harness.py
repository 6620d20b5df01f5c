"""The fault-injection run (issue 12): conversations through the real stacks while faults are injected,
then every figure checked from the fake Discord's records and the clients' results.

Two topologies run at once, each against its own fake Discord:
* `memory`: one `cdp serve` (API + gateway listener, in-memory state);
* `dynamodb`: `cdp serve --no-listener` + `cdp listener` on a moto server, both reaching DynamoDB
  through a fault-injecting proxy (FaultyDynamo below, over tests/support/ddb_faults.py).

Each topology has workers that hold conversations (streamed and not; some read slowly, some hang up
mid-stream) and an injector that fires one fault of a fixed cycle every `interval` seconds while they
run, plus the process faults (SIGTERM of the API, SIGKILL of the listener) at fixed points.
Faults are counted when injected (one per injection, however many requests it then hits).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from cdp.sim import FakeDiscord
from cdp.sim.config import make_token

from tests.support.aws import aws_env, create_tables, start_moto_server, unique_prefix
from tests.support.ddb_faults import DynamoFaultProxy
from tests.support.fake import fast_sim_config
from tests.support.proc import CdpProcess, free_port, settings_env
from tests.support.stack import API_KEY, Stack

CHAT_PREFIX = "cdp-chat-"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


# -- the store's faults ----------------------------------------------------------------------------
class FaultyDynamo(DynamoFaultProxy):
    """The next N DynamoDB requests (of the API and the listener alike) fail with `status` (500, or 400
    throttling), or are answered `delay` seconds late."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._lock = threading.Lock()
        self._fail_left = 0
        self._fail_status = 500
        self._slow_left = 0
        self._slow_delay = 0.0
        self.slowed = 0
        self.fail = self._next_failure

    def fail_next(self, n: int, status: int) -> None:
        with self._lock:
            self._fail_left, self._fail_status = n, status

    def slow_next(self, n: int, delay: float) -> None:
        with self._lock:
            self._slow_left, self._slow_delay = n, delay

    def _next_failure(self, op: str, body: dict) -> int | None:
        with self._lock:
            if self._fail_left <= 0:
                return None
            self._fail_left -= 1
            return self._fail_status

    async def _handle(self, request):
        with self._lock:
            delay = self._slow_delay if self._slow_left > 0 else 0.0
            if delay:
                self._slow_left -= 1
                self.slowed += 1
        if delay:
            await asyncio.sleep(delay)
        return await super()._handle(request)

    def heal(self) -> None:
        with self._lock:
            self._fail_left = self._slow_left = 0


# -- one topology ----------------------------------------------------------------------------------
def fault_sim_config():
    """Fast timings, and six user accounts: a 401 or 403 injected mid-request kills the account it hits
    (as Discord means it), and the run must go on with the others."""
    tokens = {make_token(f"14000000000000000{i:02d}", f"sim-user-token-fault-{i:02d}-000000000"):
              f"14000000000000000{i:02d}" for i in range(1, 7)}
    return fast_sim_config(user_tokens=tokens, owner_id="1400000000000000001")


ENV = {
    "CHANNEL_AUTO_DEL_TIME": "1",
    "CLEANUP_INTERVAL": "1",
    # after a restart in memory mode, a channel whose deletion failed is found again by the sweep
    "CHANNEL_SWEEP_AGE": "30",
    "CHANNEL_SWEEP_INTERVAL": "2",
    "LOG_LEVEL": "INFO",
    "REQUEST_RATE_LIMIT": "0",  # one client address holds every conversation
    # The sim's replies end with buttons; the idle rule is not under test here, and at 1.5 s a
    # machine so loaded that the fake Discord stalls for seconds makes it end replies early.
    "REPLY_IDLE_TIMEOUT": "8",
}


@dataclass
class Topology:
    name: str
    fake: FakeDiscord
    stack: Stack
    ddb: FaultyDynamo | None = None
    env: dict[str, str] = field(default_factory=dict)
    api_up: asyncio.Event = field(default_factory=asyncio.Event)
    retired: list[CdpProcess] = field(default_factory=list)
    drains: list[float] = field(default_factory=list)  # seconds from SIGTERM to exit
    exit_codes: list[int] = field(default_factory=list)
    unregistered_at_shutdown: int = 0

    @property
    def url(self) -> str:
        return self.stack.api.url

    @property
    def listener(self) -> CdpProcess | None:
        return self.stack.extra[0] if self.stack.extra else None

    def stop(self) -> None:
        self.stack.extra += self.retired
        try:
            self.stack.stop()  # also asserts that no secret reached a log line
        finally:
            if self.ddb is not None:
                self.ddb.stop()
            self.fake.stop()


def start_topology(name: str) -> Topology:
    fake = FakeDiscord(fault_sim_config()).start()
    try:
        port = free_port()
        env = settings_env(fake, PORT=str(port), HOST="127.0.0.1", **ENV)
        if name == "memory":
            api = CdpProcess(["serve"], env, port).start()
            topo = Topology(name, fake, Stack(fake, api, name), env=env)
        else:
            moto = start_moto_server()
            prefix = unique_prefix("faults")
            create_tables(moto.client(), prefix)
            ddb = FaultyDynamo(moto.url).start()
            env = {**env, **aws_env(moto, prefix), "AWS_ENDPOINT_URL": ddb.url}
            hp = free_port()
            listener = CdpProcess(["listener", "--health-port", str(hp)], env, hp).start()
            api = CdpProcess(["serve", "--no-listener"], env, port).start()
            topo = Topology(name, fake, Stack(fake, api, name, [listener], moto), ddb, env)
        for p in [*topo.stack.extra, topo.stack.api]:
            p.wait_healthy(60)
    except BaseException:
        fake.stop()
        raise
    return topo


# -- conversations ---------------------------------------------------------------------------------
@dataclass
class Conv:
    topo: str
    index: int
    marker: str
    stream: bool
    client: str  # "normal" | "slow" | "disconnect"
    long: bool
    status: int | None = None
    text: str = ""
    done: bool = False  # a stream's [DONE]
    finish: str | None = None
    error: dict | None = None  # the OpenAI error object the client got
    transport: str | None = None  # an exception on the client's side
    outcome: str = ""  # exact | error | gone | lost | unanswered
    attempts: int = 0  # HTTP requests made (the SDK's retries included)
    expected: str | None = None  # the Coze bot's reply in the fake Discord
    prompts: list = field(default_factory=list)  # the prompt messages in the fake Discord


def plan(topo: str, n: int) -> list[Conv]:
    out = []
    for i in range(n):
        stream = i % 2 == 0
        client = "disconnect" if i % 10 == 4 else "slow" if i % 10 in (2, 8) else "normal"
        out.append(Conv(topo, i, "m" + uuid.uuid4().hex[:16], stream, client, long=i % 10 == 7))
    return out


def body_of(c: Conv) -> dict:
    text = f"fault run {c.marker}" + (" [[sim:long]]" if c.long else "")
    return {"model": "gpt-4o", "stream": c.stream, "messages": [{"role": "user", "content": text}]}


def openai_error(payload: object) -> dict | None:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        err = payload["error"]
        if isinstance(err.get("message"), str) and err["message"] and err.get("type"):
            return err
    return None


RETRY_STATUSES = {408, 409, 429} | set(range(500, 600))


def sdk_would_retry(status: int, headers: httpx.Headers) -> bool:
    """The openai SDKs' rule: `x-should-retry` decides when sent, else the status does."""
    hint = headers.get("x-should-retry")
    if hint is not None:
        return hint == "true"
    return status in RETRY_STATUSES


async def converse(url: str, c: Conv, max_retries: int = 2) -> None:
    """One conversation as an openai SDK client holds it: up to `max_retries` retries where the SDK
    would retry (x-should-retry, else 408/409/429/5xx; a refused connection)."""
    for attempt in range(max_retries + 1):
        c.attempts = attempt + 1
        c.error, c.transport, c.status = None, None, None
        retry_after = await converse_once(url, c)
        if retry_after is None or attempt == max_retries:
            return
        await asyncio.sleep(min(retry_after, 2.0))


async def converse_once(url: str, c: Conv) -> float | None:
    """One HTTP request; seconds to wait before a retry the SDK would make, or None."""
    # No keep-alive: a request never lands on a connection the server is closing (SIGTERM).
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=90, limits=limits) as http:
        try:
            if not c.stream:
                r = await http.post("/v1/chat/completions", json=body_of(c))
                c.status = r.status_code
                try:
                    payload = r.json()
                except ValueError:
                    payload = None
                if r.status_code == 200 and isinstance(payload, dict):
                    choice = payload["choices"][0]
                    c.text, c.finish = choice["message"]["content"] or "", choice.get("finish_reason")
                    return None
                c.error = openai_error(payload)
                return _retry_after(r) if sdk_would_retry(r.status_code, r.headers) else None
            async with http.stream("POST", "/v1/chat/completions", json=body_of(c)) as r:
                c.status = r.status_code
                if r.status_code != 200:
                    try:
                        c.error = openai_error(json.loads(await r.aread()))
                    except ValueError:
                        pass
                    return _retry_after(r) if sdk_would_retry(r.status_code, r.headers) else None
                parts: list[str] = []
                async for line in r.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        c.done = True
                        continue
                    frame = json.loads(data)
                    if openai_error(frame):
                        c.error = openai_error(frame)
                        continue
                    for choice in frame.get("choices") or []:
                        parts.append((choice.get("delta") or {}).get("content") or "")
                        c.finish = choice.get("finish_reason") or c.finish
                    c.text = "".join(parts)
                    if c.client == "disconnect" and c.text:
                        return None  # hang up mid-stream: the response is closed unread
                    if c.client == "slow":
                        await asyncio.sleep(0.15)
                return None
        except httpx.ConnectError as exc:  # nothing was sent: the SDK retries
            c.transport = f"{type(exc).__name__}: {exc}"
            return 0.5
        except httpx.HTTPError as exc:
            c.transport = f"{type(exc).__name__}: {exc}"
            return None


def _retry_after(r: httpx.Response) -> float:
    try:
        return float(r.headers.get("retry-after", "0.5"))
    except ValueError:
        return 0.5


# -- faults ----------------------------------------------------------------------------------------
class Injector:
    def __init__(self, topo: Topology, counts: Counter) -> None:
        self.topo = topo
        self.counts = counts
        self.fake = topo.fake
        self.guild = topo.fake.config.guild_id
        self.account_faults_left = {"rest: 401 on a prompt post (account fails over)": 1,
                                    "rest: 403 verify-your-account on a prompt post": 1}

    async def fire(self, label: str, fn: Callable[[], object]) -> None:
        await asyncio.to_thread(fn)
        self.counts[(self.topo.name, label)] += 1

    def cycle(self) -> list[tuple[str, Callable[[], Awaitable[None] | None]]]:
        f, g = self.fake, self.guild
        out: list[tuple[str, Callable[[], object]]] = [
            ("gateway: abrupt close (TCP reset)", f.gateway_drop),
            ("rest: 500 on a prompt post (retried, same nonce)",
             lambda: f.fail_next("POST", "/messages", 500, 0, "500: Internal Server Error")),
            ("gateway: op 7 reconnect", f.gateway_reconnect),
            ("rest: 502 on a prompt post (retried, same nonce)",
             lambda: f.fail_next("POST", "/messages", 502, 0, "502: Bad Gateway")),
            ("gateway: op 9 invalid session, resumable", lambda: f.gateway_invalid_session(True)),
            ("rest: post stored, then a late 504 (timeout after acceptance)",
             lambda: f.accept_then_fail("POST", "/messages", 504, delay=0.5)),
            ("rest: 429 storm on the prompt route",
             lambda: f.inject_429("/messages", count=3, retry_after=0.3, method="POST")),
            ("gateway: op 9 invalid session, not resumable", lambda: f.gateway_invalid_session(False)),
            ("rest: 429 storm on channel creation",
             lambda: f.inject_429(f"/guilds/{g}/channels", count=2, retry_after=0.3, method="POST")),
            ("rest: global 429 storm", lambda: f.inject_429("/channels", count=3, retry_after=0.3, global_=True)),
            ("rest: 500 on channel creation",
             lambda: f.fail_next("POST", f"/guilds/{g}/channels", 500, 0, "500: Internal Server Error")),
            ("rest: 500 on channel deletion",
             lambda: f.fail_next("DELETE", "/channels/", 500, 0, "500: Internal Server Error")),
        ]
        if self.topo.ddb is not None:
            d = self.topo.ddb
            out += [("store: throttling (400 ProvisionedThroughputExceeded)", lambda: d.fail_next(3, 400)),
                    ("store: 500 InternalServerError", lambda: d.fail_next(3, 500)),
                    ("store: slow answers (+0.4 s)", lambda: d.slow_next(8, 0.4))]
        return out

    async def zombie(self) -> None:
        """The gateway stops acknowledging heartbeats for a while: the listener must notice and reconnect."""
        await self.fire("gateway: zombie connection (no heartbeat ACK)", lambda: self.fake.gateway_stop_acks(True))
        await asyncio.sleep(2.5)
        await asyncio.to_thread(self.fake.gateway_stop_acks, False)

    async def account_fault(self) -> None:
        for label, left in self.account_faults_left.items():
            if left:
                self.account_faults_left[label] -= 1
                status, code, msg = (401, 0, "401: Unauthorized") if "401" in label else \
                    (403, 40002, "You need to verify your account in order to perform this action.")
                await self.fire(label, lambda: self.fake.fail_next("POST", "/messages", status, code, msg))
                return

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        faults = itertools.cycle(self.cycle())
        step = 0
        background: set[asyncio.Task] = set()
        while not stop.is_set():
            step += 1
            if step % 15 == 0:
                t = asyncio.create_task(self.zombie())
                background.add(t)
                t.add_done_callback(background.discard)
            elif step % 20 == 7:
                await self.account_fault()
            else:
                label, fn = next(faults)
                await self.fire(label, fn)
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
        for t in list(background):
            await t
        await asyncio.to_thread(self.fake.gateway_stop_acks, False)
        if self.topo.ddb is not None:
            self.topo.ddb.heal()

    # -- process faults
    async def sigterm_api(self) -> None:
        """SIGTERM `cdp serve` with requests in flight: they are answered (drained), the process exits 0
        by itself; then it is started again on the same port."""
        topo = self.topo
        topo.api_up.clear()  # no new request while it is down (a refused connection is no test)
        await asyncio.sleep(0.5)
        old = topo.stack.api
        t0 = time.monotonic()
        old.proc.send_signal(signal.SIGTERM)
        self.counts[(topo.name, "process: SIGTERM to the API with streams in flight")] += 1
        code = await asyncio.to_thread(old.wait_exit, 60)
        topo.drains.append(time.monotonic() - t0)
        topo.exit_codes.append(code)
        if topo.name == "dynamodb":
            topo.unregistered_at_shutdown += await asyncio.to_thread(unregistered_channels, topo)
        topo.retired.append(old)
        new = CdpProcess(list(old.args), old.env, old.port).start()
        topo.stack.api = new
        await asyncio.to_thread(new.wait_healthy, 60)
        topo.api_up.set()

    async def sigkill_listener(self) -> None:
        """SIGKILL the gateway listener mid-reply; a new one starts (a new session, not a RESUME) and
        recovers what arrived meanwhile through REST."""
        topo = self.topo
        old = topo.listener
        assert old is not None
        old.proc.kill()
        self.counts[(topo.name, "process: SIGKILL of the listener, restarted")] += 1
        await asyncio.to_thread(old.proc.wait, 10)
        await asyncio.sleep(1.0)
        topo.retired.append(old)
        new = CdpProcess(list(old.args), old.env, old.port).start()
        topo.stack.extra[0] = new
        await asyncio.to_thread(new.wait_healthy, 60)


def unregistered_channels(topo: Topology) -> int:
    """Channels still alive in Discord after the API exited that its registry (DynamoDB) does not hold:
    they would leak."""
    from cdp.adapters.store.dynamodb.replies import CHANNEL_PK

    alive = {c["id"] for c in topo.fake.channels() if c.get("name", "").startswith(CHAT_PREFIX)}
    ddb = topo.stack.moto.client()
    registered: set[str] = set()
    for table in ddb.list_tables()["TableNames"]:
        for cid in alive:
            try:
                got = ddb.get_item(TableName=table, Key={"pk": {"S": CHANNEL_PK}, "sk": {"S": cid}},
                                   ConsistentRead=True)
            except ddb.exceptions.ClientError:
                break  # another key schema
            if "Item" in got:
                registered.add(cid)
    return len(alive - registered)


# -- the run ---------------------------------------------------------------------------------------
async def drive(topo: Topology, convs: list[Conv], counts: Counter, *, concurrency: int, interval: float,
                process_faults: dict[float, str]) -> None:
    """Hold every conversation of `convs` (with `concurrency` workers) while the injector runs; the
    process faults fire once that share of the conversations has started."""
    topo.api_up.set()
    queue: asyncio.Queue[Conv] = asyncio.Queue()
    for c in convs:
        queue.put_nowait(c)
    injector = Injector(topo, counts)
    stop = asyncio.Event()
    started = 0
    pending = sorted(process_faults.items())
    process_tasks: list[asyncio.Task] = []

    async def worker() -> None:
        nonlocal started
        while True:
            try:
                c = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await topo.api_up.wait()
            started += 1
            while pending and started >= pending[0][0] * len(convs):
                _, what = pending.pop(0)
                process_tasks.append(asyncio.create_task(getattr(injector, what)()))
            if c.client == "disconnect":
                counts[(topo.name, "client: disconnect mid-stream")] += 1
            elif c.client == "slow" and c.stream:
                counts[(topo.name, "client: slow reader")] += 1
            await converse(topo.url, c)

    inj = asyncio.create_task(injector.run(stop, interval))
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await asyncio.gather(*process_tasks)
    finally:
        stop.set()
        await inj


@dataclass
class Verdict:
    convs: list[Conv]
    duplicates: list[str]
    leaked: dict[str, int]
    unregistered: int


def classify(fake: FakeDiscord, convs: list[Conv]) -> list[str]:
    """Each conversation's outcome, from the fake Discord's records; returns the markers posted twice."""
    channels = [c["id"] for c in fake.created_channels()]
    messages = [m for cid in channels for m in fake.messages(cid)]
    by_nonce = Counter(m["nonce"] for m in messages if not m["author"].get("bot") and m.get("nonce"))
    twice = [n for n, k in by_nonce.items() if k > 1]
    duplicates = []
    for c in convs:
        prompts = [m for m in messages if c.marker in (m.get("content") or "") and not m["author"].get("bot")]
        if len(prompts) > 1 or any(m.get("nonce") in twice for m in prompts):
            duplicates.append(c.marker)
        expected = None
        c.prompts = [{"id": m["id"], "nonce": m.get("nonce"), "author": m["author"]["id"],
                      "channel": m["channel_id"]} for m in prompts]
        if prompts:
            pid = prompts[0]["id"]
            parts = sorted((m for m in messages if (m.get("message_reference") or {}).get("message_id") == pid),
                           key=lambda m: int(m["id"]))
            expected = "".join(m.get("content") or "" for m in parts)
        c.expected = expected
        if c.client == "disconnect" and c.stream and c.text and not c.done:
            c.outcome = "gone"
        elif c.transport is not None and c.transport.startswith("ConnectError") and not prompts:
            c.outcome = "refused"  # the API was restarting: nothing was sent, nothing posted
        elif c.error is not None and (not c.stream or c.status != 200 or c.done):
            c.outcome = "error"  # a clear OpenAI error (status >= 400, or an error frame then [DONE])
        elif c.transport is None and c.status == 200 and (c.done or not c.stream) and c.finish == "stop":
            c.outcome = "exact" if expected is not None and c.text == expected else "lost"
        else:
            c.outcome = "unanswered"
    return duplicates


async def wait_no_chat_channels(fake: FakeDiscord, timeout: float) -> list[str]:
    """The names of the `cdp-chat-*` channels still there after `timeout` s (none: [])."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [c for c in await asyncio.to_thread(fake.channels) if c.get("name", "").startswith(CHAT_PREFIX)]
        if not alive or time.monotonic() > deadline:
            return [c["name"] for c in alive]
        await asyncio.sleep(0.5)


def table(counts: Counter, convs: list[Conv], duplicates: list[str], leaked: int, unregistered: int,
          drains: list[float]) -> str:
    outcomes = Counter(c.outcome for c in convs)
    faults = sum(counts.values())
    rows = [
        ("faults injected", "≥ 100", faults),
        ("conversations", str(len(convs)), len(convs)),
        ("replies lost or corrupted", "0", outcomes["lost"]),
        ("prompts posted twice", "0", len(duplicates)),
        ("requests without a final answer or a clear error", "0", outcomes["unanswered"]),
        ("channels leaked", "0", leaked + unregistered),
    ]
    lines = ["| figure | target | result |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", f"answers exact: {outcomes['exact']}; clear errors: {outcomes['error']}; "
              f"connection refused while the API restarted (nothing posted): {outcomes['refused']}; "
              f"hung up by the client (deliberately): {outcomes['gone']}; "
              f"drain after SIGTERM: {', '.join(f'{d:.1f} s' for d in drains) or '-'}", "",
              "| fault | memory | dynamodb |", "|---|---|---|"]
    labels = sorted({label for _, label in counts})
    lines += [f"| {label} | {counts[('memory', label)]} | {counts[('dynamodb', label)]} |" for label in labels]
    errors = Counter(f"{c.topo}: {c.status} {(c.error or {}).get('code') or (c.error or {}).get('type')}"
                     for c in convs if c.outcome == "error")
    if errors:
        lines += ["", "clear errors: " + ", ".join(f"{k} ×{n}" for k, n in sorted(errors.items()))]
    return "\n".join(lines)
