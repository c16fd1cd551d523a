"""Follow one publish through the broker and count its hops: calls across objects.

A sans-IO :class:`~felix_server.server.FelixServer` and two aioquic clients (felix_proto
``ClientConnection``) exchange datagrams in memory, as ``benchmarks/server_pass.py`` does: a
subscriber follows stream ``s`` and a publisher publishes one record to it. With the
datagrams of that publish in hand, the broker's part is traced (``sys.setprofile``): from
``FelixServer.datagram_received`` (what the runtime adapter calls with what the socket read)
to the datagrams ``FelixServer.datagrams_to_send`` returns (what the adapter writes to the
socket), the publisher's ack and the subscriber's batch among them.

A *hop* is a call from code of one object to a method of another (functions of a module
count as that module's object), both in the broker's packages (``felix_*``), or from them
into aioquic's connection. Each distinct ``caller object -> callee object.method`` edge is
counted once, in the order it first happened (property reads count as calls: they are). A
*back-edge* is a hop into an object that is already on the call stack below the caller: a
callee calling back up into (one of) its callers. *Component edges* count the distinct
``caller class -> callee class`` pairs between stateful objects only (no module functions,
no value records such as events, messages and slices, no observer): the coarse picture of
which parts talk to which.

Usage: ``python benchmarks/hops.py [--json] [--path]`` (``--path`` prints every hop, indented
by call depth).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from aioquic.quic import events as qe
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from felix_proto import ALPN
from felix_proto import events as fe
from felix_proto.client import ClientConnection
from felix_proto.messages import AdminCreate, StartKind
from felix_runtime.tls import ensure_self_signed
from felix_server.config import ServerConfig
from felix_server.server import FelixServer, make_quic_configuration

SERVER = ("127.0.0.1", 7447)
T = N = "default"


class _Client:
    def __init__(self, cafile: str, port: int, now: float) -> None:
        config = QuicConfiguration(
            is_client=True, alpn_protocols=[ALPN], server_name="localhost", max_datagram_size=1452
        )
        config.load_verify_locations(cafile)
        self.addr = ("127.0.0.1", port)
        self.quic = QuicConnection(configuration=config)
        self.quic.connect(SERVER, now=now)
        self.felix = ClientConnection(default_timeout=60.0)
        self.events: list[fe.Event] = []
        self.hello = False

    def pump(self, now: float) -> list[bytes]:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, qe.HandshakeCompleted) and not self.hello:
                self.felix.connect(now=now)
                self.hello = True
            elif isinstance(event, qe.StreamDataReceived):
                self.felix.stream_data_received(event.stream_id, event.data, event.end_stream)
        while (fev := self.felix.next_event()) is not None:
            self.events.append(fev)
        for sid, data, end in self.felix.data_to_send():
            self.quic.send_stream_data(sid, data, end)
        return [data for data, _ in self.quic.datagrams_to_send(now=now)]


class _Net:
    def __init__(self, tmp: Path) -> None:
        files = ensure_self_signed(tmp)
        config = ServerConfig(data_dir=str(tmp))
        quic_config = make_quic_configuration(config)
        quic_config.load_cert_chain(str(files.cert_path), str(files.key_path))
        self.now = 1_000_000.0
        self.server = FelixServer(config, quic_config, now=self.now)
        self.cafile = str(files.cert_path)
        self.clients: list[_Client] = []

    def client(self) -> _Client:
        client = _Client(self.cafile, 40000 + len(self.clients), self.now)
        self.clients.append(client)
        self.until(lambda: any(type(e).__name__ == "Welcomed" for e in client.events))
        return client

    def step(self) -> None:
        self.now += 0.001
        server = self.server
        timer = server.get_timer()
        if timer is not None and timer <= self.now:
            server.handle_timer(self.now)
        for client in self.clients:
            for data in client.pump(self.now):
                server.datagram_received(data, client.addr, self.now)
        by_addr = {c.addr: c for c in self.clients}
        for data, addr in server.datagrams_to_send(self.now):
            by_addr[addr].quic.receive_datagram(data, SERVER, self.now)

    def until(self, done: Any) -> None:
        for _ in range(2000):
            if done():
                return
            self.step()
        raise AssertionError("not reached")


class _Tracer:
    def __init__(self) -> None:
        self.edges: dict[tuple[str, str, str], int] = {}  # edge -> depth it first happened at
        self.back: dict[tuple[str, str, str], None] = {}
        self.components: dict[tuple[str, str], None] = {}
        self.names: dict[int, str] = {}
        self.calls = 0

    def _owner(self, frame: FrameType) -> tuple[object, str] | None:
        module = frame.f_globals.get("__name__", "")
        if not module.startswith(("felix_", "aioquic")):
            return None
        obj = frame.f_locals.get("self", frame.f_locals.get("cls"))
        if obj is None:
            return sys.modules.get(module, module), module
        name = obj.__name__ if isinstance(obj, type) else type(obj).__name__
        return obj, name

    def __call__(self, frame: FrameType, event: str, arg: object) -> None:
        if event != "call":
            return
        callee = self._owner(frame)
        caller_frame = frame.f_back
        if callee is None or caller_frame is None:
            return
        caller = self._owner(caller_frame)
        if caller is None or caller[0] is callee[0]:
            return
        module = caller_frame.f_globals.get("__name__", "")
        if not module.startswith("felix_"):
            return  # aioquic calling itself, or back into felix_ (never happens)
        self.calls += 1
        edge = (self._label(*caller), self._label(*callee), frame.f_code.co_name)
        stack = []
        f: FrameType | None = caller_frame.f_back
        while f is not None:
            owner = self._owner(f)
            if owner is not None:
                stack.append(owner[0])
            f = f.f_back
        depth = len({id(o) for o in stack})
        self.edges.setdefault(edge, depth)
        if any(o is callee[0] for o in stack):
            self.back[edge] = None
        if _component(caller[0]) and _component(callee[0]):
            self.components[(caller[1], callee[1])] = None

    def _label(self, obj: object, name: str) -> str:
        key = id(obj)
        if key not in self.names:
            same = sum(1 for n in self.names.values() if n.split("#")[0] == name)
            self.names[key] = name if not same else f"{name}#{same + 1}"
        return self.names[key]


def _component(obj: object) -> bool:
    """A stateful part: not a module, not a value record, not the observer."""
    return not (
        isinstance(obj, ModuleType | tuple | type)
        or dataclasses.is_dataclass(obj)
        or type(obj).__name__.endswith("Observer")
    )


def measure(show_path: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        net = _Net(Path(tmp))
        sub, pub = net.client(), net.client()
        rid = pub.felix.admin(
            AdminCreate,
            kind="stream",
            tenant=T,
            namespace=N,
            name="s",
            settings={"batch_max_delay_us": 0},
            now=net.now,
        )
        net.until(lambda: any(getattr(e, "request_id", None) == rid for e in pub.events))
        sub.felix.subscribe(T, N, "s", start=StartKind.EARLIEST, now=net.now)
        net.until(lambda: any(type(e).__name__ == "SubscriptionStarted" for e in sub.events))
        for i in range(3):  # warm up: the path is the steady one
            pub.felix.publish(T, N, "s", b"warm-%d" % i, now=net.now)
            net.until(lambda: any(type(e).__name__ == "PublishAcked" for e in pub.events))
            pub.events.clear()
        net.step()
        net.step()
        pub.felix.publish(T, N, "s", b"traced", now=net.now)
        datagrams = pub.pump(net.now)
        tracer = _Tracer()
        server = net.server
        net.now += 0.001
        sys.setprofile(tracer)
        try:
            for data in datagrams:
                server.datagram_received(data, pub.addr, net.now)
            out = server.datagrams_to_send(net.now)
        finally:
            sys.setprofile(None)
        to = {addr for _, addr in out}
        assert sub.addr in to and pub.addr in to, "the batch and the ack went out"
    if show_path:
        for (caller, callee, fn), depth in tracer.edges.items():
            mark = "  <- back-edge" if (caller, callee, fn) in tracer.back else ""
            print(f"{'  ' * min(depth, 12)}{caller} -> {callee}.{fn}{mark}")
    objects = {c for c, _, _ in tracer.edges} | {c for _, c, _ in tracer.edges}
    if show_path:
        print("component edges:")
        for caller, callee in tracer.components:
            print(f"  {caller} -> {callee}")
    return {
        "hops": len(tracer.edges),
        "back_edges": len(tracer.back),
        "objects": len(objects),
        "component_edges": len(tracer.components),
        "components": len({c for pair in tracer.components for c in pair}),
        "calls_across_objects": tracer.calls,
        "back_edge_list": [f"{a} -> {b}.{f}" for a, b, f in tracer.back],
    }


def main(argv: list[str] | None = None) -> int:
    """Trace one publish and print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--path", action="store_true", help="print every hop")
    args = parser.parse_args(argv)
    result = measure(args.path)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:24} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
