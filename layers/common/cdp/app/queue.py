"""Fair queue and backpressure in front of the Discord user accounts.

Every prompt needs a slot of an account (a lease in the LeaseStore: ACCOUNT_MAX_CONCURRENT per account,
ACCOUNT_MIN_GAP seconds between two posts, rules in cdp.domain.fairness). A request that finds none
free waits in this process's `FairQueue`, served round-robin between API keys; only the request whose
turn it is tries the store, so a key's burst cannot overtake another key. A newcomer is refused at
once (ServiceError BUSY → 429 + Retry-After, before anything is created or posted) when the queue holds
QUEUE_MAX_SIZE requests or its expected wait exceeds QUEUE_MAX_WAIT; a waiter is refused the same way
when its wait reaches QUEUE_MAX_WAIT. With the DynamoDB store the leases are shared, so the per-account
limits hold across Lambda instances; the queue's order is per process (one request per Lambda instance).

Releases of this process wake the waiter at once; slots freed elsewhere (another instance, an expiry)
are seen by polling the store every POLL_SECONDS at most, or when the store says a slot may be free.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable

from cdp.app import errors as se
from cdp.app.pool import AccountPool, NoUsableAccount
from cdp.domain.fairness import FairQueue, HoldEstimate, expected_wait
from cdp.ports import LeaseStore
from cdp.settings import Settings

log = logging.getLogger("cdp.app.queue")

POLL_SECONDS = 0.5  # a waiter whose turn it is looks at the store at least this often
INITIAL_HOLD_SECONDS = 5.0  # first guess of a prompt's time in flight, before any was measured
LEASE_MARGIN_SECONDS = 30.0  # a lease outlives its request's timeout by this much, then expires
RENEW_AFTER_SHARE = 0.5  # a lease still held is renewed (for another ttl) once half its ttl has passed


class AccountLease:
    """The account one request posts with, held from its turn until `release()` (the reply is over)."""

    def __init__(self, queue: AccountQueue, api_key: str, request_id: str, ttl: float) -> None:
        self.queue = queue
        self.api_key = api_key
        self.holder = f"{request_id}-{uuid.uuid4().hex[:8]}"
        self.ttl = ttl
        self.token = ""
        self.account = ""  # fingerprint
        self.slot = -1
        self.taken_at = 0.0
        self.renewed_at = 0.0  # when the store last (re)set its expiry

    async def acquire(self, exclude: set[str] = frozenset()) -> tuple[str, str]:
        """(token, fingerprint): the account held, unless it is in `exclude` (it failed: then it is
        released and the request queues for another one). Raises ServiceError (BUSY, UNAVAILABLE)."""
        if self.account and self.account not in exclude:
            return self.token, self.account
        await self.release()
        await self.queue.admit(self, exclude)
        return self.token, self.account

    async def keep(self) -> None:
        """Called while the reply goes on: once half the ttl has passed since the slot was taken or
        last renewed, hold it for another ttl. A stream's timeout counts between two edits, so a long
        reply can outlast `ttl`; without this, its slot would expire and be taken while it streams
        (ACCOUNT_MAX_CONCURRENT broken). A failed renewal is logged, never raised: the answer goes on."""
        if not self.account:
            return
        now = self.queue.clock()
        if now - self.renewed_at < self.ttl * RENEW_AFTER_SHARE:
            return
        try:
            held = await self.queue.leases.renew(self.account, self.slot, self.holder, now + self.ttl)
        except Exception:
            log.warning("could not renew the account's lease", extra={"account": self.account}, exc_info=True)
            return
        self.renewed_at = now
        if not held:
            log.warning("the account's lease had expired and was taken; the reply goes on",
                        extra={"account": self.account})

    async def release(self) -> None:
        """Give the slot back (idempotent; a store failure is logged: the lease then expires)."""
        if not self.account:
            return
        account, slot = self.account, self.slot
        self.account, self.token, self.slot = "", "", -1
        await self.queue.give_back(account, slot, self.holder, self.taken_at)


class AccountQueue:
    def __init__(self, settings: Settings, pool: AccountPool, leases: LeaseStore, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.pool = pool
        self.leases = leases
        self.clock = clock
        self._waiting: FairQueue[AccountLease] = FairQueue()
        self._wakers: set[asyncio.Future[None]] = set()
        self._hold = HoldEstimate(INITIAL_HOLD_SECONDS)
        self.in_flight = 0  # leases held by this process

    def lease(self, api_key: str | None, request_id: str, request_seconds: float) -> AccountLease:
        return AccountLease(self, api_key or "", request_id, request_seconds + LEASE_MARGIN_SECONDS)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def expected_wait(self, api_key: str) -> float:
        s = self.settings
        capacity = len(self.pool.fingerprints) * s.ACCOUNT_MAX_CONCURRENT
        cycle = max(self._hold.value, s.ACCOUNT_MIN_GAP)
        return expected_wait(self._waiting.ahead_of(api_key), self.in_flight, capacity, cycle)

    def _retry_after(self, wait: float) -> int:
        return max(1, math.ceil(min(wait, self.settings.QUEUE_MAX_WAIT + self._hold.value)))

    async def admit(self, lease: AccountLease, exclude: set[str]) -> None:
        """Wait for `lease`'s turn and a free account slot; fills in the lease."""
        s = self.settings
        if len(self._waiting) >= s.QUEUE_MAX_SIZE:
            wait = self.expected_wait(lease.api_key)
            raise se.busy(f"Every Discord user account is busy and {len(self._waiting)} requests are "
                          f"already waiting (QUEUE_MAX_SIZE); retry in {self._retry_after(wait)} s.",
                          self._retry_after(wait), code="queue_full")
        wait = self.expected_wait(lease.api_key)
        if wait > s.QUEUE_MAX_WAIT:
            raise se.busy(f"Every Discord user account is busy; the expected wait of {wait:.0f} s exceeds "
                          f"QUEUE_MAX_WAIT ({s.QUEUE_MAX_WAIT:g} s). Retry in {self._retry_after(wait)} s.",
                          self._retry_after(wait), code="queue_wait_exceeded")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.QUEUE_MAX_WAIT
        self._waiting.push(lease.api_key, lease)
        try:
            while True:
                retry_in = POLL_SECONDS
                if self._waiting.peek() is lease:
                    retry_in = await self._try_take(lease, exclude)
                    if lease.account:
                        assert self._waiting.peek() is lease  # only its own `finally` removes the head
                        self._waiting.pop()  # served: its key goes to the back of the turn
                        self._wake()  # the next in turn may find a slot too
                        return
                left = deadline - loop.time()
                if left <= 0:
                    raise se.busy(f"Every Discord user account stayed busy for QUEUE_MAX_WAIT "
                                  f"({s.QUEUE_MAX_WAIT:g} s); nothing was posted. Retry in "
                                  f"{self._retry_after(self.expected_wait(lease.api_key))} s.",
                                  self._retry_after(self.expected_wait(lease.api_key)),
                                  code="queue_wait_exceeded")
                await self._sleep(min(max(retry_in, 0.01), POLL_SECONDS, left))
        finally:
            if self._waiting.remove(lease):
                self._wake()

    async def _try_take(self, lease: AccountLease, exclude: set[str]) -> float:
        """Try every healthy account (least recently used first); fills `lease` on success, else
        returns the seconds after which one may be free."""
        s = self.settings
        try:
            candidates = await self.pool.candidates(exclude)
        except NoUsableAccount as exc:
            raise se.unavailable(exc.message, exc.retry_after) from None
        retry_in = math.inf
        for rec in candidates:
            now = self.clock()
            decision = await self.leases.take(rec.key, lease.holder, now, max_concurrent=s.ACCOUNT_MAX_CONCURRENT,
                                              min_gap=s.ACCOUNT_MIN_GAP, ttl=lease.ttl)
            if decision.slot is not None:
                lease.token = await self.pool.use(rec)
                lease.account, lease.slot, lease.taken_at = rec.key, decision.slot, decision.at or now
                lease.renewed_at = lease.taken_at
                self.in_flight += 1
                return 0.0
            retry_in = min(retry_in, decision.retry_in)
        return retry_in

    async def give_back(self, account: str, slot: int, holder: str, taken_at: float) -> None:
        self.in_flight -= 1
        self._hold.add(self.clock() - taken_at)
        try:
            await self.leases.release(account, slot, holder)
        except Exception:
            log.warning("could not release the account's lease; it expires on its own",
                        extra={"account": account}, exc_info=True)
        self._wake()

    def _wake(self) -> None:
        for fut in self._wakers:
            if not fut.done():
                fut.set_result(None)
        self._wakers.clear()

    async def _sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._wakers.add(fut)
        try:
            await asyncio.wait_for(fut, seconds)
        except TimeoutError:
            pass
        finally:
            self._wakers.discard(fut)
