"""Fixtures for every test of the project."""

import pytest_asyncio

from core import shared


@pytest_asyncio.fixture(autouse=True)
async def no_push_outlives_its_test():
    """Each test runs in an event loop of its own: cancel a shared-figures push still waiting.

    Left pending, asyncio would report it destroyed ("Task was destroyed but
    it is pending!") in whatever test ran when the garbage collector found it.
    """
    yield
    await shared.figures_changed.aclose()
