"""Interop sanity: our header decoder reads the reference implementation's v1 frames.

The vectors live outside the repository, in the ``shared`` folder beside the checkout
(``../shared/reference/felix-v1-vectors``); the tests skip when it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from felix_proto.codec import MessageDecoder, encode_v1_error
from felix_proto.errors import UnsupportedVersion
from felix_proto.frames import HEADER_SIZE, FrameDecoder, parse_header

V1 = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "felix-v1-vectors"
HEX_FILES = sorted(V1.glob("*.hex")) if V1.is_dir() else []

pytestmark = pytest.mark.skipif(
    not HEX_FILES, reason=f"reference v1 vectors not found at {V1.resolve()}"
)


def test_all_thirteen_present() -> None:
    assert len(HEX_FILES) == 13


@pytest.mark.parametrize("path", HEX_FILES, ids=lambda p: p.stem)
def test_header_reports_version_one(path: Path) -> None:
    frame = bytes.fromhex(path.read_text().strip())
    meta = json.loads(path.with_suffix(".json").read_text())
    header = parse_header(frame)
    assert header.version == 1
    assert header.flags == meta.get("flags", 0)
    assert header.length == len(frame) - HEADER_SIZE == len(bytes.fromhex(meta["payload_hex"]))


@pytest.mark.parametrize("path", HEX_FILES, ids=lambda p: p.stem)
def test_decoder_rejects_with_unsupported_version_one(path: Path) -> None:
    decoder = FrameDecoder()
    decoder.feed(bytes.fromhex(path.read_text().strip()))
    with pytest.raises(UnsupportedVersion) as info:
        decoder.next_frame()
    assert info.value.version == 1
    assert info.value.details == {"supported_versions": [2]}


def test_v1_error_frame_matches_reference_encoding() -> None:
    reference = bytes.fromhex((V1 / "error.hex").read_text().strip())
    assert encode_v1_error("oops") == reference


def test_message_decoder_too() -> None:
    decoder = MessageDecoder()
    decoder.feed(bytes.fromhex((V1 / "publish.hex").read_text().strip()))
    with pytest.raises(UnsupportedVersion):
        decoder.next_message()
