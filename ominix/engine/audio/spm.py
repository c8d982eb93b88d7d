"""Decode ids with a SentencePiece model file, without the sentencepiece library.

SenseVoice ships its vocabulary as a SentencePiece `.bpe.model` (a protobuf ModelProto). Decoding
needs only the pieces and their types, so we read field 1 (repeated SentencePiece {piece, score,
type}) with a tiny protobuf walker and apply SentencePiece's decode rules: control pieces vanish,
unknown pieces become " \u2047 ", <0xNN> byte pieces join into UTF-8, "\u2581" becomes a space and the
leading one of the text is dropped.
"""

from __future__ import annotations

from pathlib import Path

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
SPACE = "\u2581"


def _varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(data: bytes):
    """(field number, wire type, value) of one protobuf message; value is bytes for wire type 2."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _utf8_per_byte(data: bytes) -> str:
    """UTF-8 with one U+FFFD per invalid byte, as SentencePiece does (Python's "replace" merges)."""
    out, i = [], 0
    while i < len(data):
        lead = data[i]
        size = 1 if lead < 0x80 else 2 if lead >> 5 == 6 else 3 if lead >> 4 == 14 else 4 if lead >> 3 == 30 else 0
        try:
            out.append(data[i:i + size].decode("utf-8") if size else "\ufffd")
            i += max(size, 1)
        except UnicodeDecodeError:
            out.append("\ufffd")
            i += 1
    return "".join(out)


class SentencePieceDecoder:
    def __init__(self, pieces: list[str], types: list[int]):
        self.pieces, self.types = pieces, types

    @classmethod
    def from_file(cls, path: str | Path) -> "SentencePieceDecoder":
        pieces, types = [], []
        for number, wire, value in _fields(Path(path).read_bytes()):
            if number != 1 or wire != 2:
                continue
            piece, kind = "", NORMAL
            for n, _, v in _fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 3:
                    kind = v
            pieces.append(piece)
            types.append(kind)
        if not pieces:
            raise ValueError(f"{Path(path).name} has no SentencePiece pieces")
        return cls(pieces, types)

    def __len__(self) -> int:
        return len(self.pieces)

    def piece(self, i: int) -> str:
        return self.pieces[i]

    def decode(self, ids: list[int]) -> str:
        out: list[str] = []
        pending = bytearray()  # consecutive byte pieces form one UTF-8 sequence

        def flush():
            if pending:
                out.append(_utf8_per_byte(bytes(pending)))
                pending.clear()

        for i in ids:
            kind = self.types[i] if 0 <= i < len(self.types) else UNKNOWN
            if kind in (CONTROL, UNUSED):
                continue
            if kind == BYTE:
                pending.append(int(self.pieces[i][3:5], 16))
                continue
            flush()
            text = " \u2047 " if kind == UNKNOWN else self.pieces[i]
            if not "".join(out) and text.startswith(SPACE):
                text = text[1:]  # SentencePiece's dummy prefix
            out.append(text.replace(SPACE, " "))
        flush()
        return "".join(out)
