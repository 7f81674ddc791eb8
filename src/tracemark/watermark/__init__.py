"""Invisible watermarks: one interface, a registry, tracemark's own method and peer adapters.

>>> from tracemark import watermark
>>> wm = watermark.get_method("lattice")
>>> marked = wm.embed(image, payload=0xC0FFEE, key="my secret passphrase")
>>> result = wm.detect(marked, key="my secret passphrase")
>>> result.present, result.payload_int, result.p_value
"""

from tracemark.watermark import (
    ours,  # noqa: F401  (registers "lattice")
    peers,  # noqa: F401  (registers the peers; imports no library)
)
from tracemark.watermark.base import (
    DEFAULT_ALPHA,
    Detection,
    WatermarkMethod,
    bits_to_bytes,
    carried_mark,
    embed_once,
    format_payload,
    get_method,
    list_methods,
    parse_payload,
    payload_to_bits,
    register_method,
)
from tracemark.watermark.keys import WatermarkKey, read_key

__all__ = [
    "DEFAULT_ALPHA",
    "carried_mark",
    "embed_once",
    "Detection",
    "WatermarkMethod",
    "WatermarkKey",
    "bits_to_bytes",
    "format_payload",
    "get_method",
    "list_methods",
    "parse_payload",
    "payload_to_bits",
    "read_key",
    "register_method",
]
