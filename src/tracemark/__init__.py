"""tracemark: image provenance — watermarks, fingerprints, copy detection, attacks, credentials."""

from tracemark.errors import TracemarkError

__version__ = "0.1.0"

__all__ = ["TracemarkError", "__version__"]
