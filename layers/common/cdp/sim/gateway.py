"""Discord Gateway v10 (JSON encoding, optional zlib-stream transport compression)."""

from __future__ import annotations

import asyncio
import collections
import copy
import json
import secrets
import time
import urllib.parse
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import (
    GATEWAY_GUILD_MEMBERS,
    GATEWAY_GUILD_MEMBERS_LIMITED,
    GATEWAY_MESSAGE_CONTENT,
    GATEWAY_MESSAGE_CONTENT_LIMITED,
    GATEWAY_PRESENCE,
    GATEWAY_PRESENCE_LIMITED,
)

if TYPE_CHECKING:
    from .core import Sim

OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_VOICE, OP_RESUME = 0, 1, 2, 3, 4, 6
OP_RECONNECT, OP_REQUEST_MEMBERS, OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 7, 8, 9, 10, 11
OP_REQUEST_SOUNDBOARD = 31
CLIENT_OPS = {OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE, OP_VOICE, OP_RESUME, OP_REQUEST_MEMBERS, OP_REQUEST_SOUNDBOARD}

VALID_INTENTS = 0
for _b in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 21, 24, 25):
    VALID_INTENTS |= 1 << _b
INTENT_GUILD_MEMBERS, INTENT_PRESENCES, INTENT_MESSAGE_CONTENT = 1 << 1, 1 << 8, 1 << 15
INTENT_GUILDS, INTENT_GUILD_MESSAGES = 1 << 0, 1 << 9

# close codes after which the session can not be resumed
NON_RESUMABLE = {4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014, 1000, 1001}
CONTENT_KEYS = ("content", "embeds", "attachments", "components")


class Session:
    def __init__(self, sid: str, user_id: str, intents: int, shard: list[int], token: str) -> None:
        self.id = sid
        self.user_id = user_id
        self.intents = intents
        self.shard = shard
        self.token = token
        self.seq = 0
        self.buffer: collections.deque[dict] = collections.deque()
        self.conn: Conn | None = None
        self.valid = True
        self.disconnected_at: float | None = None


class Conn:
    def __init__(self, hub: GatewayHub, send: Any, compress: bool, path: str) -> None:
        self.hub = hub
        self.raw_send = send
        self.z = zlib.compressobj() if compress else None
        self.path = path
        self.queue: asyncio.Queue = asyncio.Queue()
        self.session: Session | None = None
        self.closed = False
        self.close_code: int | None = None
        self.sends: collections.deque[float] = collections.deque()
        self.last_heartbeat = time.monotonic()
        self.writer: asyncio.Task | None = None

    def enqueue(self, payload: dict) -> None:
        if not self.closed:
            self.queue.put_nowait(("send", payload))

    def close(self, code: int, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
            self.queue.put_nowait(("close", code, reason))

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = 1006
            self.queue.put_nowait(("abort",))

    async def write_loop(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                if item[0] == "send":
                    text = json.dumps(item[1], ensure_ascii=False, separators=(",", ":"))
                    sent_at = time.perf_counter()
                    if self.z is not None:
                        data = self.z.compress(text.encode("utf-8")) + self.z.flush(zlib.Z_SYNC_FLUSH)
                        sent_at = time.perf_counter()
                        await self.raw_send({"type": "websocket.send", "bytes": data})
                    else:
                        await self.raw_send({"type": "websocket.send", "text": text})
                    if self.hub.on_sent is not None:
                        self.hub.on_sent(self.session, item[1], sent_at)
                elif item[0] == "close":
                    await self.raw_send({"type": "websocket.close", "code": item[1], "reason": item[2]})
                    return
                elif item[0] == "abort":
                    proto = getattr(self.raw_send, "__self__", None)
                    transport = getattr(proto, "transport", None)
                    if transport is not None:
                        transport.abort()
                    else:  # fallback: close with an abnormal code
                        await self.raw_send({"type": "websocket.close", "code": 4000, "reason": "dropped"})
                    return
            except Exception:
                return


class GatewayHub:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.sessions: dict[str, Session] = {}
        self.conns: list[Conn] = []
        self.connections_total = 0
        self.resume_path_connections = 0
        self.identifies = 0
        self.resumes = 0
        self.stop_acks = False
        self.forced_identify_close: int | None = None
        self.events: list[dict] = []  # log of (conn path, op, t, s)
        # Optional observer (bench/stream_bench.py): on the fake's loop, after each payload was written
        # to a client's socket, called with (session, payload, time.perf_counter() just before the
        # write); must be quick and must not raise.
        self.on_sent: Callable[[Session | None, dict, float], None] | None = None

    # ------------------------------------------------------------ dispatch
    def _send_dispatch(self, sess: Session, t: str, d: Any) -> None:
        sess.seq += 1
        payload = {"op": OP_DISPATCH, "t": t, "s": sess.seq, "d": d}
        sess.buffer.append(payload)
        while len(sess.buffer) > self.sim.cfg.replay_buffer:
            sess.buffer.popleft()
        if sess.conn is not None:
            sess.conn.enqueue(payload)

    def live_sessions(self) -> list[Session]:
        now = time.time()
        out = []
        for s in list(self.sessions.values()):
            if not s.valid:
                continue
            if s.conn is None and s.disconnected_at is not None and now - s.disconnected_at > self.sim.cfg.resume_window:
                s.valid = False
                continue
            out.append(s)
        return out

    def dispatch_guild(self, t: str, d: dict, intent: int) -> None:
        for s in self.live_sessions():
            if s.intents & intent:
                self._send_dispatch(s, t, copy.deepcopy(d))

    def dispatch_message(self, t: str, d: dict) -> None:
        channel_id = str(d.get("channel_id") or "")
        for s in self.live_sessions():
            if not s.intents & INTENT_GUILD_MESSAGES:
                continue
            # as Discord: only to those who can see the channel (permission overwrites, other servers);
            # events of a channel already deleted (MESSAGE_DELETE) go out as before
            if channel_id in self.sim.channels and not self.sim.can(s.user_id, channel_id, 1 << 10):
                continue
            dd = copy.deepcopy(d)
            if not s.intents & INTENT_MESSAGE_CONTENT and t != "MESSAGE_DELETE":
                author = (dd.get("author") or {}).get("id")
                mentioned = any(u.get("id") == s.user_id for u in dd.get("mentions") or [])
                if author != s.user_id and not mentioned:
                    for k in CONTENT_KEYS:
                        if k in dd:
                            dd[k] = "" if k == "content" else []
                    dd.pop("poll", None)
            self._send_dispatch(s, t, dd)

    # ------------------------------------------------------------ faults
    def current_conns(self) -> list[Conn]:
        return [c for c in self.conns if not c.closed]

    def reconnect(self) -> int:
        cs = self.current_conns()
        for c in cs:
            c.enqueue({"op": OP_RECONNECT, "d": None})
            asyncio.get_running_loop().call_later(5.0, c.close, 4000, "reconnect requested")
        return len(cs)

    def invalid_session(self, resumable: bool) -> int:
        cs = self.current_conns()
        for c in cs:
            if c.session is not None and not resumable:
                c.session.valid = False
            c.enqueue({"op": OP_INVALID_SESSION, "d": bool(resumable)})
            asyncio.get_running_loop().call_later(5.0, c.close, 4000 if resumable else 4009, "invalid session")
        return len(cs)

    def drop(self, user_id: str | None = None) -> int:
        cs = [c for c in self.current_conns() if user_id is None or (c.session and c.session.user_id == user_id)]
        for c in cs:
            c.abort()
        return len(cs)

    def close_all(self, code: int, reason: str = "") -> int:
        cs = self.current_conns()
        for c in cs:
            if code in NON_RESUMABLE and c.session is not None:
                c.session.valid = False
            c.close(code, reason)
        return len(cs)

    def request_heartbeat(self) -> int:
        cs = self.current_conns()
        for c in cs:
            c.enqueue({"op": OP_HEARTBEAT, "d": None})
        return len(cs)

    def stats(self) -> dict:
        return {
            "connections_total": self.connections_total,
            "open_connections": len(self.current_conns()),
            "resume_path_connections": self.resume_path_connections,
            "identify_count": self.identifies,
            "resume_count": self.resumes,
            "sessions": [
                {"id": s.id, "seq": s.seq, "valid": s.valid, "connected": s.conn is not None, "intents": s.intents}
                for s in self.sessions.values()
            ],
        }

    # ------------------------------------------------------------ connection
    async def handle(self, scope: dict, receive: Any, send: Any) -> None:
        msg = await receive()
        if msg["type"] != "websocket.connect":
            return
        qs = dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode()))
        await send({"type": "websocket.accept"})
        compress = qs.get("compress")
        conn = Conn(self, send, compress == "zlib-stream", scope.get("path", "/gateway"))
        self.connections_total += 1
        if conn.path.startswith("/gateway-resume"):
            self.resume_path_connections += 1
        self.conns.append(conn)
        conn.writer = asyncio.create_task(conn.write_loop())
        try:
            await self._run(conn, qs, receive)
        finally:
            if not conn.closed:
                conn.closed = True
            sess = conn.session
            if sess is not None and sess.conn is conn:
                sess.conn = None
                sess.disconnected_at = time.time()
                if conn.close_code in NON_RESUMABLE:
                    sess.valid = False
            if conn in self.conns:
                self.conns.remove(conn)
            if not conn.writer.done():
                conn.writer.cancel()

    async def _run(self, conn: Conn, qs: dict, receive: Any) -> None:
        cfg = self.sim.cfg
        v = qs.get("v", "10")
        if qs.get("encoding", "json") != "json":
            conn.close(4002, "fake discord supports encoding=json only")
        elif qs.get("compress") not in (None, "zlib-stream"):
            conn.close(4002, "fake discord supports compress=zlib-stream only")
        elif v not in ("9", "10"):
            conn.close(4012, "Invalid API version")
        else:
            conn.enqueue({"op": OP_HELLO, "d": {"heartbeat_interval": cfg.heartbeat_interval_ms, "_trace": ["[\"sim-gateway\"]"]}, "s": None, "t": None})
        identify_deadline = time.monotonic() + cfg.identify_timeout
        hb_grace = cfg.heartbeat_interval_ms / 1000.0 * 2 + 5.0
        while True:
            if conn.closed:
                # wait for the client side to finish (or drop), briefly
                try:
                    m = await asyncio.wait_for(receive(), 5.0)
                except TimeoutError:
                    return
                if m["type"] == "websocket.disconnect":
                    return
                continue
            if conn.session is None:
                timeout = identify_deadline - time.monotonic()
            else:
                timeout = conn.last_heartbeat + hb_grace - time.monotonic()
            try:
                m = await asyncio.wait_for(receive(), max(0.01, timeout))
            except TimeoutError:
                conn.close(4003 if conn.session is None else 4009, "Not authenticated." if conn.session is None else "Session timed out.")
                continue
            if m["type"] == "websocket.disconnect":
                conn.close_code = m.get("code", 1005)
                conn.closed = True
                return
            raw = m.get("text")
            if raw is None and m.get("bytes") is not None:
                try:
                    raw = m["bytes"].decode("utf-8")
                except UnicodeDecodeError:
                    raw = None
            try:
                payload = json.loads(raw) if raw is not None else None
                op = payload["op"]
            except Exception:
                conn.close(4002, "Error while decoding payload.")
                continue
            now = time.monotonic()
            conn.sends.append(now)
            while conn.sends and now - conn.sends[0] > 60.0:
                conn.sends.popleft()
            if len(conn.sends) > cfg.gateway_send_limit:
                conn.close(4008, "Rate limited.")
                continue
            self.events.append({"op": op, "path": conn.path, "at": time.time()})
            await self._on_payload(conn, op, payload.get("d"))

    async def _on_payload(self, conn: Conn, op: Any, d: Any) -> None:
        if op not in CLIENT_OPS:
            conn.close(4001, "Unknown opcode.")
            return
        if op == OP_HEARTBEAT:
            conn.last_heartbeat = time.monotonic()
            if not self.stop_acks:
                conn.enqueue({"op": OP_HEARTBEAT_ACK, "d": None})
            return
        if op == OP_IDENTIFY:
            self._identify(conn, d)
            return
        if op == OP_RESUME:
            self._resume(conn, d)
            return
        if conn.session is None:
            conn.close(4003, "Not authenticated.")
            return
        if op == OP_REQUEST_MEMBERS:
            sess = conn.session
            if isinstance(d, dict):
                nonce = d.get("nonce")
                members = [self.sim.member(uid) for uid in self.sim.users]
                ids = d.get("user_ids")
                if ids:
                    ids = {str(i) for i in (ids if isinstance(ids, list) else [ids])}
                    members = [m for m in members if m["user"]["id"] in ids]
                chunk = {"guild_id": self.sim.cfg.guild_id, "members": members, "chunk_index": 0, "chunk_count": 1}
                if nonce is not None:
                    chunk["nonce"] = nonce
                self._send_dispatch(sess, "GUILD_MEMBERS_CHUNK", chunk)
        # presence / voice / soundboard requests are accepted and ignored

    def _check_token(self, token: Any) -> tuple[str, str] | None:
        if not isinstance(token, str):
            return None
        tok = token[4:] if token.startswith("Bot ") else token
        entry = self.sim.tokens.get(tok)
        if entry is None or entry[0] != "bot" or tok in self.sim.revoked:
            return None
        return tok, entry[1]

    def _identify(self, conn: Conn, d: Any) -> None:
        if conn.session is not None:
            conn.close(4005, "Already authenticated.")
            return
        self.identifies += 1
        if self.forced_identify_close is not None:
            code, self.forced_identify_close = self.forced_identify_close, None
            conn.close(code, "Forced by simulator.")
            return
        if not isinstance(d, dict):
            conn.close(4002, "Error while decoding payload.")
            return
        auth = self._check_token(d.get("token"))
        if auth is None:
            conn.close(4004, "Authentication failed.")
            return
        tok, user_id = auth
        intents = d.get("intents")
        if not isinstance(intents, int) or isinstance(intents, bool) or intents < 0 or intents & ~VALID_INTENTS:
            conn.close(4013, "Invalid intent(s).")
            return
        flags = self.sim.cfg.app_flags if user_id == self.sim.cfg.bot_user_id else 0
        if (
            (intents & INTENT_MESSAGE_CONTENT and not flags & (GATEWAY_MESSAGE_CONTENT | GATEWAY_MESSAGE_CONTENT_LIMITED))
            or (intents & INTENT_GUILD_MEMBERS and not flags & (GATEWAY_GUILD_MEMBERS | GATEWAY_GUILD_MEMBERS_LIMITED))
            or (intents & INTENT_PRESENCES and not flags & (GATEWAY_PRESENCE | GATEWAY_PRESENCE_LIMITED))
        ):
            conn.close(4014, "Disallowed intent(s).")
            return
        shard = d.get("shard") or [0, 1]
        if not (isinstance(shard, list) and len(shard) == 2 and shard[1] == 1 and shard[0] == 0):
            conn.close(4010, "Invalid shard.")
            return
        if not isinstance(d.get("properties"), dict):
            conn.close(4002, "Error while decoding payload.")
            return
        self.sim.session_start_remaining = max(0, self.sim.session_start_remaining - 1)
        sess = Session(secrets.token_hex(16), user_id, intents, shard, tok)
        self.sessions[sess.id] = sess
        sess.conn = conn
        conn.session = sess
        conn.last_heartbeat = time.monotonic()
        cfg = self.sim.cfg
        ready = {
            "v": 10,
            "user_settings": {},
            "user": {**copy.deepcopy(self.sim.users[user_id]), "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": cfg.guild_id, "unavailable": True}],
            "session_id": sess.id,
            "session_type": "normal",
            "resume_gateway_url": self.sim.resume_gateway_url,
            "shard": shard,
            "application": {"id": cfg.application_id, "flags": cfg.app_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["sim"],
            "auth": {},
            "_trace": ["[\"sim-gateway\"]"],
        }
        self._send_dispatch(sess, "READY", ready)
        if intents & INTENT_GUILDS:
            self._send_dispatch(sess, "GUILD_CREATE", self.sim.guild_object(full=True))

    def _resume(self, conn: Conn, d: Any) -> None:
        if conn.session is not None:
            conn.close(4005, "Already authenticated.")
            return
        if not isinstance(d, dict):
            conn.close(4002, "Error while decoding payload.")
            return
        auth = self._check_token(d.get("token"))
        if auth is None:
            conn.close(4004, "Authentication failed.")
            return
        sess = self.sessions.get(str(d.get("session_id")))
        live = {s.id for s in self.live_sessions()}
        seq = d.get("seq")
        if sess is None or sess.id not in live or sess.token != auth[0]:
            conn.enqueue({"op": OP_INVALID_SESSION, "d": False})
            return
        if not isinstance(seq, int) or seq > sess.seq:
            sess.valid = False
            conn.close(4007, "Invalid seq.")
            return
        if sess.buffer and seq < sess.buffer[0]["s"] - 1:
            sess.valid = False
            conn.enqueue({"op": OP_INVALID_SESSION, "d": False})
            return
        old = sess.conn
        if old is not None and old is not conn:
            old.session = None
            old.close(4000, "Session resumed elsewhere.")
        self.resumes += 1
        sess.conn = conn
        sess.disconnected_at = None
        conn.session = sess
        conn.last_heartbeat = time.monotonic()
        for p in sess.buffer:
            if p["s"] > seq:
                conn.enqueue(p)
        self._send_dispatch(sess, "RESUMED", {"_trace": ["[\"sim-gateway\"]"]})
