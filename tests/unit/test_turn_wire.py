"""TURN's own wire formats (turn/wire.py) against aioice's STUN codec and RFC 8656's layouts."""

from __future__ import annotations

import pytest
from aioice import stun

from roomcast.turn.wire import (
    StreamDecoder,
    channel_data,
    data_indication,
    is_channel_data,
    parse_channel_data,
    xor_address,
)


def test_channel_data_layout_and_padding() -> None:
    assert channel_data(0x4001, b"abc", padded=False) == b"\x40\x01\x00\x03abc"
    assert channel_data(0x4001, b"abc", padded=True) == b"\x40\x01\x00\x03abc\x00"  # RFC 8656 §12.5
    assert parse_channel_data(b"\x40\x01\x00\x03abc\x00") == (0x4001, b"abc")
    assert parse_channel_data(b"\x40\x01\x00\x05abc") is None  # shorter than it says
    assert is_channel_data(0x40) and is_channel_data(0x4F) and not is_channel_data(0x50)


@pytest.mark.parametrize("peer", [("198.18.0.1", 7882), ("2001:db8::1", 3478)])
def test_data_indications_and_xor_addresses_parse_with_aioice(peer: tuple[str, int]) -> None:
    transaction = bytes(range(12))
    message = stun.parse_message(data_indication(peer, b"hello", transaction))
    assert message.message_method == stun.Method.DATA
    assert message.message_class == stun.Class.INDICATION
    assert message.attributes["XOR-PEER-ADDRESS"] == peer
    assert message.attributes["DATA"] == b"hello"
    assert xor_address(peer, transaction) == stun.pack_xor_address(peer, transaction)


def test_stream_decoder_splits_stun_and_padded_channel_data_across_reads() -> None:
    binding = bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST))
    framed = channel_data(0x4000, b"12345", padded=True)
    stream = binding + framed + binding
    decoder = StreamDecoder()
    out = []
    for i in range(0, len(stream), 7):
        out += decoder.feed(stream[i : i + 7])
    assert out == [binding, framed, binding]
    with pytest.raises(ValueError, match="neither STUN nor ChannelData"):
        StreamDecoder().feed(b"\x80\x00\x00\x00")  # RTP is not TURN
