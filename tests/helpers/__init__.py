"""Helpers the tests import (``from helpers.runs import ...``); fixtures live in tests/conftest.py."""
