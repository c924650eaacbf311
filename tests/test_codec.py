"""The msgpack state codec: value and key round trips, registered types."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import pickle
import uuid
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statefulstream.errors import ConfigError, StateCorruptedError
from statefulstream.state.codec import Codec, StateEncodeError

_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
            | st.floats(allow_nan=False) | st.text() | st.binary()
            | st.datetimes() | st.datetimes(timezones=st.timezones()) | st.dates()
            | st.decimals(allow_nan=False, allow_infinity=False) | st.uuids() | st.timedeltas())
_hashables = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.binary(),
                          lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=8)
_values = st.recursive(
    _scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                   | st.dictionaries(_hashables, inner, max_size=4) | st.sets(_hashables, max_size=4)),
    max_leaves=20)


@dataclasses.dataclass
class Session:
    user: str
    started: dt.datetime
    events: list[int]


class Color(enum.Enum):
    RED = 1


class TestCodec:
    @settings(max_examples=300, deadline=None)
    @given(_values)
    def test_every_supported_value_round_trips_with_its_type(self, value: object) -> None:
        codec = Codec()
        decoded = codec.decode(codec.encode(value))
        assert decoded == value
        assert type(decoded) is type(value)

    @settings(max_examples=100, deadline=None)
    @given(st.lists(_values, max_size=8))
    def test_decode_many_is_decode_of_each(self, values: list[object]) -> None:
        codec = Codec()
        decoded = codec.decode_many([codec.encode(v) for v in values])
        assert decoded == values
        assert [type(d) for d in decoded] == [type(v) for v in values]

    def test_decode_many_reports_the_bad_item_as_decode_does(self) -> None:
        codec = Codec()
        with pytest.raises(StateCorruptedError, match=r"\(1 bytes\)"):
            codec.decode_many([codec.encode([1, 2]), b"\xc1", codec.encode("x")])

    @pytest.mark.parametrize("items", [
        [b"\x01\x02", b"\x03"],  # two values in one item: three values for two items
        [b"\x92\x01", b"\x03"],  # a truncated array that the next item would complete: one value for two
        [b"\x92\x01", b"\x03", b"\x04\x05"],  # the two above together: as many values as items, misaligned
        [b"\x01", b"\x92\x01"],  # the last item truncated: the stream ends inside it
    ])
    def test_decode_many_never_reads_values_across_items(self, items: list[bytes]) -> None:
        with pytest.raises(StateCorruptedError):
            Codec().decode_many(items)

    @settings(max_examples=200, deadline=None)
    @given(_hashables)
    def test_group_keys_round_trip(self, key: object) -> None:
        codec = Codec()
        assert codec.decode_key(codec.encode_key(key)) == key

    def test_tuples_nested_in_containers_stay_tuples(self) -> None:
        codec = Codec()
        value = {"path": [("a", 1), ("b", (2, 3))], (1, 2): "tuple key"}
        decoded = codec.decode(codec.encode(value))
        assert decoded == value
        assert isinstance(decoded["path"][1][1], tuple)

    def test_aware_datetime_keeps_zone_name_and_instant(self) -> None:
        codec = Codec()
        paris = dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
        decoded = codec.decode(codec.encode(paris))
        assert decoded.tzinfo == zoneinfo.ZoneInfo("Europe/Paris")
        assert decoded.fold == 1 and decoded.utcoffset() == paris.utcoffset()

    def test_registered_dataclass_round_trips(self) -> None:
        codec = Codec()
        codec.register_type(Session)
        value = {"s": Session("ann", dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc), [1, 2])}
        assert codec.decode(codec.encode(value)) == value

    def test_custom_encode_decode_pair(self) -> None:
        codec = Codec()
        codec.register_type(Color, lambda c: c.name, lambda name: Color[name], name="color")
        assert codec.decode(codec.encode([Color.RED])) == [Color.RED]

    def test_unregistered_dataclass_error_says_how_to_register(self) -> None:
        with pytest.raises(StateEncodeError, match=r"Session.*register_type"):
            Codec().encode({"s": Session("ann", dt.datetime(2024, 1, 1), [])})

    def test_enum_is_not_flattened_to_its_value(self) -> None:
        with pytest.raises(StateEncodeError, match="Color"):
            Codec().encode(Color.RED)

    def test_register_without_functions_needs_a_dataclass(self) -> None:
        with pytest.raises(ConfigError, match="encode= and decode="):
            Codec().register_type(Color)

    def test_a_name_cannot_be_taken_twice(self) -> None:
        codec = Codec()
        codec.register_type(Session, name="x")
        with pytest.raises(ConfigError, match="already registered"):
            codec.register_type(Color, str, str, name="x")

    def test_value_of_a_type_unregistered_in_this_process_is_reported_not_guessed(self) -> None:
        writer, reader = Codec(), Codec()
        writer.register_type(Session)
        data = writer.encode(Session("ann", dt.datetime(2024, 1, 1), []))
        with pytest.raises(StateCorruptedError, match="not registered in this process"):
            reader.decode(data)

    def test_garbage_bytes_are_state_corruption(self) -> None:
        with pytest.raises(StateCorruptedError):
            Codec().decode(b"\xc1")

    def test_pickled_bytes_are_never_unpickled(self) -> None:
        # A pickle is just bytes to the codec: it is not a msgpack value, so it is rejected, not executed.
        with pytest.raises(StateCorruptedError):
            Codec().decode(pickle.dumps(Session("ann", dt.datetime(2024, 1, 1), [])))

    def test_encoder_is_usable_after_a_failed_encode(self) -> None:
        codec = Codec()
        with pytest.raises(StateEncodeError):
            codec.encode({"a": object()})
        assert codec.decode(codec.encode({"a": 1})) == {"a": 1}

    def test_values_are_msgpack_a_reader_without_statefulstream_can_decode(self) -> None:
        import msgpack

        assert msgpack.unpackb(Codec().encode({"count": 3, "tags": ["a"]})) == {"count": 3, "tags": ["a"]}

    def test_uuid_and_decimal_keep_exact_value(self) -> None:
        codec = Codec()
        value = [uuid.UUID(int=7), decimal.Decimal("1.10")]
        decoded = codec.decode(codec.encode(value))
        assert decoded == value and str(decoded[1]) == "1.10"

