"""Fixtures of the whole suite: the fake Discord (tests/support/fake.py)."""

from tests.support.fake import fake, make_fake

__all__ = ["fake", "make_fake"]
