"""The fake webhook receiver of ``tests/fakes``, loaded from its path (pytest runs with
``--import-mode=importlib``, so ``tests.fakes`` is not importable as a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fakes.webhook_receiver import WebhookReceiver as WebhookReceiver

_FAKE = Path(__file__).resolve().parent.parent / "fakes" / "webhook_receiver.py"
_MODULE_NAME = "promptrecord_tests_fakes_webhook_receiver"


def _receiver_module() -> ModuleType:
    module = sys.modules.get(_MODULE_NAME)
    if module is None:
        spec = importlib.util.spec_from_file_location(_MODULE_NAME, _FAKE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE_NAME] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return module


_module = _receiver_module()
if not TYPE_CHECKING:
    WebhookReceiver = _module.WebhookReceiver
verifies_standard = _module.verifies_standard
verifies_hmac = _module.verifies_hmac

__all__ = ["WebhookReceiver", "verifies_hmac", "verifies_standard"]
