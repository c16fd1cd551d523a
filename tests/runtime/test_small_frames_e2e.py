"""On every runtime: a ``Hello`` with ``max_frame_size`` 0 gets ``Error(INVALID_ARGUMENT)``
and the close, with nothing escaping into the runtime's callbacks (before the fix: no
answer, and "Exception in callback UdpRuntime._readable" in the log).

The rest of docs/wire-protocol.md §5.4 (replies answered ``TOO_LARGE``, batches split, feeds
ended) runs on every runtime through the conformance suite (``limits.*`` checks,
``tests/conformance/test_conformance_runtimes.py``) and in memory in
``test_small_frames.py``.
"""

from __future__ import annotations

import pytest
from aioquic.quic import events as qe

from felix_proto import messages as m
from felix_proto.codec import MessageDecoder, encode
from felix_proto.errors import ErrorCode

from .conftest import Connect, StartBroker
from .harness import metric

pytestmark = pytest.mark.anyio


async def test_a_zero_max_frame_size_is_refused_without_a_runtime_error(
    start_broker: StartBroker, connect: Connect
) -> None:
    proc = await start_broker()
    raw = await connect(proc, raw=True)
    raw.quic.send_stream_data(0, encode(m.Hello(versions=[2], max_frame_size=0)))
    raw.transmit()
    end = await raw.wait_quic(qe.ConnectionTerminated)
    assert isinstance(end, qe.ConnectionTerminated)
    assert end.error_code == ErrorCode.INVALID_ARGUMENT
    decoder = MessageDecoder()
    decoder.feed(raw.stream_bytes(0))
    error = decoder.next_message()
    assert isinstance(error, m.Error) and error.code == ErrorCode.INVALID_ARGUMENT
    healthy = await connect(proc)  # the broker serves the next client
    assert healthy.felix.state.value == "ready"
    assert await metric(proc.metrics_address, "felix_internal_errors_total") == 0
    assert not [line for line in proc.log_messages() if "Exception in callback" in line]
