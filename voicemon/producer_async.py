"""The asyncio producer (``voicemon_producer.AsyncEventProducer``), plus ``from_settings``."""

from __future__ import annotations

from typing import Any, Self

from voicemon.producer import settings_options
from voicemon.settings import Settings
from voicemon_producer import async_producer as _core


class AsyncEventProducer(_core.AsyncEventProducer):
    """``voicemon_producer.AsyncEventProducer`` (see there), plus ``from_settings``."""

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> Self:
        """A producer for the deployment ``settings`` describe; see ``EventProducer``."""
        return cls(**{**settings_options(settings), **options})
