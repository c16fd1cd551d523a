"""conformance: a black-box suite any implementer runs against any Felix broker address.

It speaks raw frames built with felix_proto. ``conformance/vectors/`` holds the golden
codec vectors of the wire protocol.
"""
