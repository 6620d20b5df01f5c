"""Answers under the tool-call / JSON-mode protocol (cdp.domain.tools), with one repair round.

`StructuredReply.steps()` follows a posted conversation like `Conversation.updates()`, but holds the
text back until the protocol allows it to be shown (prose under tool_choice auto), reads the final
answer by the protocol and, when it breaks the protocol, posts ONE short correction in the same
channel as the same user account and reads the next reply. A second broken answer is a ServiceError
(502, `invalid_model_output`, not retried: a retry would post the prompt again).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from cdp.app import errors as se
from cdp.app.conversation import Conversation, ConversationService, Progress
from cdp.domain.discord import DiscordError, new_nonce
from cdp.domain.prompt import PromptError, split_within
from cdp.domain.tools import Answer, Emulation, Gate, TextAnswer, Violation

log = logging.getLogger("cdp.app.structured")

#: Repair rounds after a broken answer (the brief: exactly one).
REPAIR_ROUNDS = 1


@dataclass(frozen=True)
class Step:
    """One observation. `text`: the answer so far when it may be shown (prose). On the last step
    (`done`), `answer` is the answer read by the protocol, or None when `progress.decision` carries
    a Coze error or an empty timeout."""

    progress: Progress
    text: str | None = None
    done: bool = False
    answer: Answer | None = None


def invalid_output(reason: str) -> se.ServiceError:
    return se.upstream_error(f"The Coze bot's answer broke the tool-call/JSON protocol again after one "
                             f"correction: {reason}.", code="invalid_model_output", retry=False)


class StructuredReply:
    def __init__(self, service: ConversationService, conv: Conversation, emulation: Emulation) -> None:
        self.service = service
        self.conv = conv
        self.emulation = emulation
        self.follow_ups: list[Conversation] = []

    @property
    def prompt_tokens(self) -> int:
        """The prompt's tokens plus those of the correction, if one was posted."""
        return self.conv.prompt_tokens + sum(c.prompt_tokens for c in self.follow_ups)

    async def steps(self, heartbeat: float | None = None) -> AsyncIterator[Step]:
        """Every change and heartbeat (as Conversation.updates), the last one `done`. Raises ServiceError
        when the answer breaks the protocol after the repair round, or the correction cannot be posted."""
        current = self.conv
        for round_ in range(REPAIR_ROUNDS + 1):
            gate = Gate(self.emulation)
            last: Progress | None = None
            async with aclosing(current.updates(heartbeat=heartbeat)) as updates:
                async for progress in updates:
                    last = progress
                    if progress.decision.done:
                        break
                    shown = progress.changed and gate.feed(progress.view.text)
                    yield Step(progress, text=progress.view.text if shown else None)
            assert last is not None
            decision, text = last.decision, last.view.text
            if decision.error is not None or decision.timeout_without_text:
                yield Step(last, done=True)
                return
            if gate.feed(text):  # prose, shown (or showable) as it came
                yield Step(last, text=text, done=True, answer=TextAnswer(text))
                return
            if decision.finish_reason == "length":  # held back and cut by the deadline: unreadable
                raise se.timeout(current.timeout_seconds)
            answer = self.emulation.parse(text)
            if not isinstance(answer, Violation):
                yield Step(last, done=True, answer=answer)
                return
            if round_ == REPAIR_ROUNDS:
                log.warning("the answer broke the protocol after the repair round",
                            extra={"request_id": self.conv.spec.request_id, "reason": answer.reason})
                raise invalid_output(answer.reason)
            log.info("the answer broke the protocol; posting a correction",
                     extra={"request_id": self.conv.spec.request_id, "reason": answer.reason})
            current = await self.follow_up(self.emulation.correction(answer.reason))

    async def follow_up(self, text: str) -> Conversation:
        """Post `text` in the conversation's channel as the account that posted the prompt; the
        Conversation of its reply (not temporary: the channel stays the first conversation's)."""
        conv, service = self.conv, self.service
        token = service.pool.token_of(conv.account)
        if token is None:
            raise se.upstream_error("The user account that posted the prompt is no longer configured; the "
                                    "correction could not be posted.", retry=False)
        try:
            parts = split_within(text, conv.coze_bot_id, service.settings.PROMPT_MAX_PARTS)
        except PromptError as exc:
            raise se.upstream_error(f"The correction could not be posted: {exc.message}", retry=False) from None
        message: dict = {}
        try:
            for part in parts:
                message = await service.rest.send_user_message(token, conv.channel_id, part, nonce=new_nonce(),
                                                               allowed_user_ids=[conv.coze_bot_id])
        except DiscordError as exc:
            raise se.upstream_error(f"Discord refused the correction ({exc.status}, code {exc.code}).",
                                    retry=False) from None
        if service.ledger is not None:
            try:
                await service.ledger.record(message["id"], conv.account, conv.coze_bot_id, conv.channel_id)
            except Exception:
                log.warning("could not record who posted the correction", exc_info=True,
                            extra={"prompt_message_id": message["id"]})
        follow = Conversation(conv.spec, text, None, message["id"], conv.channel_id, False, service,
                              account=conv.account, coze_bot_id=conv.coze_bot_id)
        self.follow_ups.append(follow)
        return follow
