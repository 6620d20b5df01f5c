import pytest
from cdp.domain.completion import Decision, decide, next_wakeup
from cdp.domain.coze import CozeError, CozeErrorKind
from cdp.domain.reply import ReplyView

ERR = CozeError(
    CozeErrorKind.USER_LIMIT,
    "You have exceeded the daily limit for sending messages to the bot. Please try again later.",
)


def view(text="", buttons=False, error=None):
    return ReplyView(text, ("s",) if buttons else (), buttons, error, (), bool(text.strip()))


EMPTY = view()
TEXT = view("partial answer")
BUTTONS = view("answer", buttons=True)
ERROR = view(ERR.text, error=ERR)


def d(v, now=100.0, last=None, idle=10.0, deadline=200.0):
    return decide(v, now=now, last_change_at=last, idle_timeout=idle, deadline=deadline)


def w(v, now=100.0, last=None, idle=10.0, deadline=200.0):
    return next_wakeup(v, now=now, last_change_at=last, idle_timeout=idle, deadline=deadline)


def test_waiting():
    assert d(EMPTY) == Decision(done=False)
    assert d(TEXT, last=95.0) == Decision(done=False)
    assert d(EMPTY, last=0.0) == Decision(done=False)  # no text: idle never applies


def test_error_text():
    assert d(ERROR, last=100.0) == Decision(done=True, error=ERR, reason="error_text")


def test_buttons():
    assert d(BUTTONS, last=100.0) == Decision(done=True, finish_reason="stop", reason="buttons")
    assert d(view("", buttons=True)).reason == "buttons"


def test_idle():
    assert d(TEXT, last=90.0) == Decision(
        done=True, finish_reason="stop", reason="idle"
    )  # exactly idle_timeout
    assert not d(TEXT, last=90.01).done
    assert not d(TEXT, last=None).done
    assert not d(view("   "), last=0.0).done


def test_idle_disabled_by_non_positive_timeout():
    assert not d(TEXT, last=0.0, idle=0).done
    assert not d(TEXT, last=0.0, idle=-1).done
    assert d(TEXT, last=0.0, idle=0, now=200.0).reason == "deadline"


def test_deadline():
    assert d(TEXT, now=200.0, last=199.0) == Decision(done=True, finish_reason="length", reason="deadline")
    assert d(EMPTY, now=200.0) == Decision(done=True, timeout_without_text=True, reason="deadline")
    assert d(EMPTY, now=250.0, last=199.0).timeout_without_text
    assert not d(TEXT, now=199.99, last=199.0).done


@pytest.mark.parametrize(
    "v,now,last,reason",
    [
        (
            view(ERR.text, buttons=True, error=ERR),
            300.0,
            0.0,
            "error_text",
        ),  # error beats buttons, idle, deadline
        (view("x", buttons=True), 300.0, 0.0, "buttons"),  # buttons beat idle and deadline
        (TEXT, 300.0, 0.0, "idle"),  # idle beats deadline ("stop", not "length")
        (TEXT, 300.0, 295.0, "deadline"),
    ],
)
def test_precedence(v, now, last, reason):
    dec = d(v, now=now, last=last)
    assert dec.done and dec.reason == reason
    if reason == "idle":
        assert dec.finish_reason == "stop"


def test_next_wakeup():
    assert w(EMPTY) == 100.0  # only the deadline
    assert w(TEXT, last=95.0) == 5.0  # idle expiry first
    assert w(TEXT, last=95.0, deadline=102.0) == 2.0  # deadline first
    assert w(TEXT, last=None) == 100.0
    assert w(TEXT, last=95.0, idle=0) == 100.0  # idle disabled
    assert w(BUTTONS) == 0.0 and w(ERROR) == 0.0  # already done
    assert w(TEXT, last=50.0) == 0.0  # idle already expired
    assert w(EMPTY, now=300.0) == 0.0  # never negative
    assert isinstance(w(EMPTY), float)


def test_wakeup_then_decide_changes():
    for v, last in [(TEXT, 95.0), (EMPTY, None), (TEXT, None)]:
        t = 100.0 + w(v, last=last)
        assert not d(v, now=100.0, last=last).done
        assert d(v, now=t, last=last).done
