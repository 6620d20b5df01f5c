"""Fixtures of the whole suite: the fake Discord (tests/support/fake.py), a settings-free environment."""

from tests.support.env import clean_env
from tests.support.fake import fake, make_fake

__all__ = ["clean_env", "fake", "make_fake"]
