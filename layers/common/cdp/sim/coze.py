"""The simulated Coze bot: replies to user messages that mention it, streaming by edits.

Directive in the prompt text (anywhere; the last one wins): ``[[sim:NAME NAME2 arg=value key="quoted value"]]``.
Names: no_buttons rewrite duplicates out_of_order partial image_markdown image_embed image_attachment
silent multi long drop_gateway; args: error=user_limit|bot_limit|other [n=index], slow_first_token seconds=N
(or slow_first_token=N), text="exact final text", edits=N, pause=SECONDS (between edits).
Without a directive, a drawing prompt (the proxy's /v1/images/generations instruction, DRAW_MARKER)
is answered like Coze's image plugin: a line of text and a markdown image on the fake CDN.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .util import iso_now, number_components, tiny_png

if TYPE_CHECKING:
    from .core import Sim  # noqa: F811

USER_LIMIT_ERRORS = [
    "Hi there! You've used up your free chat credits. To continue enjoying our service, please consider upgrading to our premium plan [Upgrade to Coze Premium to chat]",
    "You have exceeded the daily limit for sending messages to the bot. Please try again later.",
    "Hi there! You've used up your credits for today. To continue enjoying our service, please try again tomorrow or consider upgrading to our premium plan.",
]
BOT_LIMIT_ERRORS = [
    "The bot's usage is covered by the developer, but due to the developer's message credits being exhausted, the bot is temporarily unavailable.",
]
OTHER_ERRORS = [
    "Something wrong occurs, please retry. If the error persists, please contact the support team.",
    "Some error occurred. Please try again or contact the support team in our communities.",
    "We've detected unusual traffic from your network, so Coze is temporarily unavailable.",
    "There are too many users now. Please try again a bit later.",
    "I'm sorry, but I can't assist with that.",
]
SUGGESTIONS = ["Tell me more about this", "Can you give an example?", "Summarize it in one line"]

DRAW_MARKER = "instructions below for the drawing task"  # in cdp.domain.images.DRAW_INSTRUCTION
DIRECTIVE_RE = re.compile(r"\[\[sim:(.*?)\]\]", re.S)
MENTION_RE = re.compile(r"<[@#][!&]?\d+>")


@dataclass
class Directive:
    flags: set[str] = field(default_factory=set)
    args: dict[str, str] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.flags or name in self.args


def parse_directive(prompt: str) -> Directive:
    found = DIRECTIVE_RE.findall(prompt or "")
    if not found:
        return Directive()
    inner = found[-1]
    if "\\" in inner:  # the prompt is JSON text: undo one level of string escaping
        try:
            inner = json.loads('"' + inner + '"')
        except ValueError:
            inner = inner.replace('\\"', '"').replace("\\\\", "\\")
    try:
        parts = shlex.split(inner)
    except ValueError:
        parts = inner.split()
    d = Directive()
    for p in parts:
        if "=" in p:
            k, v = p.split("=", 1)
            d.args[k.strip()] = v
        else:
            d.flags.add(p.strip())
    if "slow_first_token" in d.flags and "seconds" in d.args:
        d.args["slow_first_token"] = d.args["seconds"]
    return d


def _excerpt(prompt: str, n: int = 48) -> str:
    t = DIRECTIVE_RE.sub("", prompt or "")
    t = MENTION_RE.sub("", t)
    t = re.sub(r"[@<>`*_~|\\\[\]()!]", "", t)
    t = " ".join(t.split())
    return t[:n].strip() or "nothing"


def default_text(prompt: str) -> str:
    ex = _excerpt(prompt)
    return (
        f'You said: "{ex}". This is the simulated Coze bot answering in a deterministic way 🤖. '
        "Every reply is streamed by editing one message several times, and each edit carries the whole text so far. "
        "The word 你好 (nǐ hǎo) means hello in Chinese. "
        "When the answer is complete, a row of suggestion buttons is added to the message."
    )


def long_text(prompt: str) -> str:
    ex = _excerpt(prompt)
    out = [f'Long answer about "{ex}" 🤖.']
    i = 1
    while sum(len(s) + 1 for s in out) < 4500:
        out.append(f"Paragraph {i}: this sentence pads the simulated answer so that it is longer than one Discord message; 你好 {i}.")
        i += 1
    return " ".join(out)


def split_hard(text: str, limit: int) -> list[str]:
    """Cut `text` into chunks <= limit whose concatenation is `text`; never cut next to whitespace."""
    parts = []
    while len(text) > limit:
        cut = limit
        while cut > 1 and (text[cut - 1].isspace() or text[cut].isspace()):
            cut -= 1
        parts.append(text[:cut])
        text = text[cut:]
    parts.append(text)
    return parts


def final_parts(prompt: str, cdn_base: str = "http://127.0.0.1:0") -> list[str]:
    """Final content of each reply message for this prompt ([] when the bot stays silent)."""
    d = parse_directive(prompt)
    if d.has("silent"):
        return []
    err = d.args.get("error")
    if err:
        pool = {"user_limit": USER_LIMIT_ERRORS, "bot_limit": BOT_LIMIT_ERRORS}.get(err, OTHER_ERRORS)
        return [pool[int(d.args.get("n", 0)) % len(pool)]]
    protocol = protocol_answer(prompt, d)
    if "text" in d.args:
        text = d.args["text"]
    elif protocol is not None:
        text = protocol
    elif d.has("long"):
        text = long_text(prompt)
    elif d.has("image_markdown"):
        text = f"Here is the image you asked for:\n![image]({cdn_base.rstrip('/')}/cdn/img1.png)"
    elif d.has("image_embed") or d.has("image_attachment"):
        text = "Here is the image you asked for."
    elif DRAW_MARKER in prompt:
        name = f"draw-{sum(prompt.encode()) % 100000}.png"
        text = f"I drew {_excerpt(prompt.rsplit(':', 1)[-1])}.\n![image]({cdn_base.rstrip('/')}/cdn/{name})"
    else:
        text = default_text(prompt)
    text = text.strip()
    if d.has("multi"):
        mid = len(text) // 2
        while mid < len(text) - 1 and (text[mid - 1].isspace() or text[mid].isspace()):
            mid += 1
        return [p for p in (text[:mid], text[mid:]) if p] if len(text) > 1 else [text]
    return split_hard(text, 2000)


def final_text(prompt: str, cdn_base: str = "http://127.0.0.1:0") -> str:
    """The whole final answer text: ``"".join(final_parts(prompt))``."""
    return "".join(final_parts(prompt, cdn_base))


# --------------------------------------------------------------------------------------------
# The tool-call / JSON-mode protocol of cdp.domain.tools (its markers repeated: the sim stands alone).
# Directive args: tool=NAME (which tool to call), tool_args='{"k": "v"}' (its arguments), json='{..}'
# (the JSON answer), flag no_tool (answer prose although tools are offered), flag bare (JSON without
# a fence); tools_break=once|always breaks the protocol on the first answer only (the repair round's
# answer follows it) or always, as break=unknown|args|prose|badjson says (default: unknown tool
# with tools, prose in JSON mode).
PROTOCOL_HEAD = "=== ANSWER PROTOCOL (follow it exactly) ==="
CORRECTION_HEAD = "Your previous answer broke the answer protocol"
TOOL_RESULT_HEAD = "Result of tool call"


def _last_json_line(prompt: str, label: str) -> Any:
    found = re.findall(rf"^{label}: (.+)$", prompt, re.M)
    for raw in reversed(found):
        try:
            return json.loads(raw)
        except ValueError:
            continue
    return None


def example_of(schema: Any) -> Any:
    """A small value matching a (simple) JSON Schema."""
    if not isinstance(schema, dict):
        return "x"
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: example_of(v) for k, v in props.items() if k in (schema.get("required") or list(props))}
    return {"string": "x", "integer": 1, "number": 1.5, "boolean": True, "array": [], "null": None}.get(kind, "x")


def _tool_result(prompt: str) -> str:
    head = prompt[:prompt.find(PROTOCOL_HEAD)]
    tail = head[head.rfind(TOOL_RESULT_HEAD):]
    m = re.search(r"\):(?:\\n|\n)(.*?)(?:\"\}|\n\n|$)", tail, re.S)
    return (m.group(1) if m else "").replace('\\"', '"').strip()


def _fenced(obj: Any, bare: bool) -> str:
    text = json.dumps(obj, ensure_ascii=False)
    return text if bare else f"```json\n{text}\n```"


def protocol_answer(prompt: str, d: Directive) -> str | None:
    """The simulated bot's answer to a prompt carrying the proxy's answer protocol (None without one)."""
    if PROTOCOL_HEAD not in prompt:
        return None
    tools = _last_json_line(prompt, "TOOLS") or []
    schema = _last_json_line(prompt, "JSON SCHEMA")
    json_mode = "valid JSON object" in prompt[prompt.rfind(PROTOCOL_HEAD):]
    repair = CORRECTION_HEAD in prompt
    results = TOOL_RESULT_HEAD in prompt[:prompt.find(PROTOCOL_HEAD)]  # rendered history, not the protocol
    brk = d.args.get("tools_break")
    if brk == "always" or (brk == "once" and not repair):
        kind = d.args.get("break", "unknown" if tools else "prose")
        if kind == "unknown":
            return _fenced({"tool_calls": [{"name": "no_such_tool", "arguments": {}}]}, False)
        if kind == "args" and tools:
            return _fenced({"tool_calls": [{"name": tools[0]["name"], "arguments": {"unexpected": [1, 2]}}]}, False)
        if kind == "badjson":
            return '```json\n{"answer": "unterminated\n```'
        return "Sure! I would rather answer in my own words."
    if tools and not results and not d.has("no_tool"):
        forced = re.findall(r"^REQUIRED CALL: (\S+)", prompt, re.M)
        name = forced[-1] if forced else d.args.get("tool", tools[0]["name"])
        tool = next((t for t in tools if t["name"] == name), tools[0])
        args = json.loads(d.args["tool_args"]) if "tool_args" in d.args else example_of(tool.get("parameters"))
        return _fenced({"tool_calls": [{"name": tool["name"], "arguments": args}]}, d.has("bare"))
    if json_mode:
        if "json" in d.args:
            obj = json.loads(d.args["json"])
        elif schema is not None:
            obj = example_of(schema)
        else:
            obj = {"answer": _excerpt(prompt)}
        return _fenced(obj, d.has("bare"))
    if results:
        return f"According to the tool: {_tool_result(prompt)}"
    return None


def _misspell(word: str) -> str:
    return word[:2] + word[1] + word[2:]


class CozeSim:
    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.tasks: set[asyncio.Task] = set()
        self.replies_started = 0

    def on_message(self, msg: dict) -> None:
        if msg["author"].get("bot"):
            return
        ids = [u["id"] for u in msg.get("mentions") or []]
        for cid in self.sim.cfg.coze_bot_ids:
            # a Coze bot answers only where it may see the channel and post (permission overwrites)
            if cid in ids and self.sim.can(cid, msg["channel_id"], (1 << 10) | (1 << 11) | (1 << 16)):
                self.replies_started += 1
                t = asyncio.get_running_loop().create_task(self._reply(copy.deepcopy(msg), cid))
                self.tasks.add(t)
                t.add_done_callback(self.tasks.discard)

    async def _reply(self, prompt_msg: dict, coze_id: str) -> None:
        try:
            await self._reply_inner(prompt_msg, coze_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # never kill the server loop
            import traceback

            traceback.print_exc()

    async def _reply_inner(self, prompt_msg: dict, coze_id: str) -> None:
        sim, cfg = self.sim, self.sim.cfg
        prompt = prompt_msg.get("content") or ""
        if CORRECTION_HEAD in prompt:  # a repair round: answer with the channel's earlier prompt in mind
            earlier = [m.get("content") or "" for m in sim.messages.get(prompt_msg["channel_id"], [])
                       if m["author"]["id"] == prompt_msg["author"]["id"] and m["id"] != prompt_msg["id"]]
            prompt = "\n".join([*earlier, prompt])
        d = parse_directive(prompt)
        parts = final_parts(prompt, sim.root_url)
        if not parts:
            return
        delay = float(d.args.get("slow_first_token", cfg.coze_first_token_delay))
        await asyncio.sleep(delay)
        is_error = "error" in d.args
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            ok = await self._stream_one(prompt_msg, coze_id, part, d, last=last, is_error=is_error, first_part=i == 0)
            if not ok:
                return

    def _dispatch_update(self, msg: dict, d: Directive, payload: dict | None = None) -> None:
        p = payload if payload is not None else self.sim.gateway_message(msg)
        self.sim.gateway.dispatch_message("MESSAGE_UPDATE", p)
        if d.has("duplicates"):
            self.sim.gateway.dispatch_message("MESSAGE_UPDATE", copy.deepcopy(p))

    async def _stream_one(self, prompt_msg: dict, coze_id: str, text: str, d: Directive, *, last: bool, is_error: bool, first_part: bool) -> bool:
        sim, cfg = self.sim, self.sim.cfg
        interval = float(d.args.get("pause", cfg.coze_edit_interval))
        tokens = re.findall(r"\s*\S+", text) or [text]
        n = len(tokens)
        if is_error:
            steps = [n]
        else:
            edits = max(1, int(d.args.get("edits", cfg.coze_edits)))
            first = min(3, n)
            steps = [first]
            rest = n - first
            if rest > 0:
                chunk = max(1, -(-rest // edits))
                k = first
                while k < n:
                    k = min(n, k + chunk)
                    steps.append(k)
        rewrite_until = len(steps) // 2 if d.has("rewrite") and len(steps) >= 3 else 0
        typo_idx = next((j for j, t in enumerate(tokens[: steps[0]]) if len(t.strip()) >= 4 and t.strip().isalpha()), None)

        def content_at(step_index: int) -> str:
            toks = list(tokens[: steps[step_index]])
            if step_index < rewrite_until and typo_idx is not None:
                w = toks[typo_idx]
                lead = w[: len(w) - len(w.lstrip())]
                toks[typo_idx] = lead + _misspell(w.lstrip())
            return "".join(toks).strip()

        body = {"content": content_at(0)}
        msg = sim.build_message(prompt_msg["channel_id"], coze_id, body, [], mtype=19, reply_to=prompt_msg)
        if prompt_msg["channel_id"] not in sim.channels:
            return False
        sim.messages.setdefault(msg["channel_id"], []).append(msg)
        sim.msg_index[msg["id"]] = msg
        sim.channels[msg["channel_id"]]["last_message_id"] = msg["id"]
        sim.gateway.dispatch_message("MESSAGE_CREATE", sim.gateway_message(msg))
        held: dict | None = None
        swap_at = 1 if d.has("out_of_order") and len(steps) >= 3 else -1
        drop_at = min(2, len(steps) - 1) if d.has("drop_gateway") else -1
        if drop_at == 0:
            sim.gateway.drop(cfg.bot_user_id)
        for si in range(1, len(steps)):
            await asyncio.sleep(interval)
            if msg["channel_id"] not in sim.channels:
                return False
            changes: dict[str, Any] = {"content": content_at(si), "edited_timestamp": iso_now()}
            if si == len(steps) - 1 and last:
                changes.update(self._media(msg, d))
            sim.update_message(msg["id"], changes, dispatch=False)
            payload = sim.gateway_message(msg)
            if si == swap_at:
                held = payload
            else:
                self._dispatch_update(msg, d, payload)
                if held is not None:
                    self._dispatch_update(msg, d, held)
                    held = None
            if d.has("partial"):
                self._dispatch_update(msg, d, {"id": msg["id"], "channel_id": msg["channel_id"], "guild_id": sim.channels[msg["channel_id"]].get("guild_id"), "embeds": copy.deepcopy(msg["embeds"])})
            if si == drop_at:
                sim.gateway.drop(cfg.bot_user_id)
        if held is not None:
            self._dispatch_update(msg, d, held)
        if len(steps) == 1 and last and not is_error:
            media = self._media(msg, d)
            if media:
                await asyncio.sleep(interval)
                sim.update_message(msg["id"], {**media, "edited_timestamp": iso_now()}, dispatch=False)
                self._dispatch_update(msg, d)
        if last and not is_error and not d.has("no_buttons"):
            await asyncio.sleep(interval)
            if msg["channel_id"] not in sim.channels:
                return False
            components = [
                {
                    "type": 1,
                    "components": [
                        {"type": 2, "style": 2, "label": label, "custom_id": f"sim-suggest:{msg['id']}:{j}"}
                        for j, label in enumerate(SUGGESTIONS)
                    ],
                }
            ]
            components = number_components(components)
            sim.update_message(msg["id"], {"components": components, "edited_timestamp": iso_now()}, dispatch=False)
            if d.has("partial"):
                self._dispatch_update(msg, d, {"id": msg["id"], "channel_id": msg["channel_id"], "guild_id": sim.channels[msg["channel_id"]].get("guild_id"), "components": copy.deepcopy(components)})
            else:
                self._dispatch_update(msg, d)
        return True

    def _media(self, msg: dict, d: Directive) -> dict:
        sim = self.sim
        if d.has("image_embed"):
            url = f"{sim.root_url}/cdn/img1.png"
            return {"embeds": [{"type": "image", "url": url, "image": {"url": url, "proxy_url": url, "width": 1, "height": 1, "content_type": "image/png"}, "thumbnail": {"url": url, "proxy_url": url, "width": 1, "height": 1}}]}
        if d.has("image_attachment"):
            att = sim.add_attachment(msg["channel_id"], "image.png", "image/png", tiny_png())
            return {"attachments": [att]}
        return {}
