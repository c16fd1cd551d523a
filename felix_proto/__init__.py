"""felix_proto: the Felix wire protocol, version 2, as a sans-IO library.

Framing, the msgpack codec, every message as a frozen dataclass, the error-code registry
and the client/server connection state machines. Pure: no I/O, no clock; depends on
msgpack and the standard library only. See ``docs/wire-protocol.md``.
"""
