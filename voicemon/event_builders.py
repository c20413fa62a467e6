"""The event builders, as older code imports them: they live in ``voicemon_producer.builders``."""

from voicemon_producer.builders import EventBuilder, check_event, check_size, rfc3339_utc

__all__ = ["EventBuilder", "check_event", "check_size", "rfc3339_utc"]
