"""A TensorBoard event-file writer with no dependencies beyond the standard library.

TensorBoard reads TFRecord files of serialised `Event` protobufs. Pulling in tensorboard (and with
it protobuf, grpc and numpy pins) into a ComfyUI install only to *write* a few scalars is a poor
trade, so the handful of messages needed are encoded by hand here:

    Event          { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary        { repeated Value value = 1; }
    Summary.Value  { string tag = 1; float simple_value = 2; Image image = 4; }
    Summary.Image  { int32 height = 1; int32 width = 2; int32 colorspace = 3; bytes encoded_image_string = 4; }

Each record is framed as TFRecord: uint64 length, masked CRC-32C of the length, the data, masked
CRC-32C of the data (all little-endian). Every record is flushed as soon as it is written, so a run
that crashes keeps everything it logged; a record cut off mid-write is skipped by TensorBoard's
reader, which stops at the first incomplete record.
"""
from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("lora_studio.tfevents")

FILE_VERSION = "brain.Event:2"  # what TensorBoard expects in the first event of a file
FILE_PREFIX = "events.out.tfevents"


# ----------------------------------------------------------------- CRC-32C (Castagnoli)
def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of `data`. Table-driven pure Python, about 0.4 s per MB on a slow core: nothing for scalars,
    a fraction of a second for a preview PNG, which is rare next to the seconds its rendering takes."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    # TFRecord masks the CRC so that a CRC stored inside the data it covers does not weaken it.
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the payload, its masked CRC."""
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


# ----------------------------------------------------------------- protobuf wire format
def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # negative int64 values are sent as their 64-bit two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _int_field(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(int(value))


def _bytes_field(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value


def _double_field(field: int, value: float) -> bytes:
    return _key(field, 1) + struct.pack("<d", float(value))


def _float_field(field: int, value: float) -> bytes:
    return _key(field, 5) + struct.pack("<f", float(value))


def scalar_value(tag: str, value: float) -> bytes:
    """A serialised Summary.Value holding a scalar."""
    return _bytes_field(1, tag.encode("utf-8")) + _float_field(2, value)


def image_value(tag: str, encoded: bytes, height: int, width: int, colorspace: int) -> bytes:
    """A serialised Summary.Value holding an encoded (PNG/JPEG) image.

    colorspace: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA (TensorBoard's Summary.Image convention).
    """
    image = (_int_field(1, height) + _int_field(2, width) + _int_field(3, colorspace)
             + _bytes_field(4, encoded))
    return _bytes_field(1, tag.encode("utf-8")) + _bytes_field(4, image)


def event(step: int, wall_time: float, values: list[bytes] | None = None, file_version: str | None = None) -> bytes:
    """A serialised Event: either the file-version header or a Summary of `values`."""
    out = _double_field(1, wall_time) + _int_field(2, step)
    if file_version is not None:
        out += _bytes_field(3, file_version.encode("utf-8"))
    if values:
        out += _bytes_field(5, b"".join(_bytes_field(1, v) for v in values))
    return out


# ----------------------------------------------------------------- the writer
class EventFileWriter:
    """Appends events to `<log_dir>/events.out.tfevents.<time>.<host>.<pid>.<n>`.

    Thread-safe (previews may be rendered on another thread than the loop's). Never overwrites:
    two writers started in the same second in one folder get different `<n>`.
    """

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir).expanduser()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self.path = self._open_new()
        try:
            self._write(event(0, time.time(), file_version=FILE_VERSION))
        except BaseException:  # disk full at the first record: no empty event file stays behind
            try:
                self.close()
            except OSError:
                self._file = None
            self.path.unlink(missing_ok=True)
            raise
        log.info("TensorBoard events: %s", self.path)

    def _open_new(self) -> Path:
        stem = f"{FILE_PREFIX}.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        for n in range(1000):
            path = self.log_dir / f"{stem}.{n}"
            try:
                self._file = open(path, "xb")  # exclusive: another writer's file is never appended to
                return path
            except FileExistsError:
                continue
        raise FileExistsError(f"could not create a new event file in {self.log_dir}")

    def _write(self, data: bytes) -> None:
        with self._lock:
            if self._file is None:
                raise ValueError(f"event file {self.path} is closed")
            self._file.write(frame_record(data))
            # Flush per record, not per run: a killed process keeps every step it reported.
            self._file.flush()

    def add_scalars(self, values: dict[str, float], step: int, wall_time: float | None = None) -> None:
        """Several scalars of one step, in one event."""
        if values:
            self._write(event(step, time.time() if wall_time is None else wall_time,
                              [scalar_value(tag, v) for tag, v in values.items()]))

    def add_scalar(self, tag: str, value: float, step: int, wall_time: float | None = None) -> None:
        self.add_scalars({tag: value}, step, wall_time)

    def add_image(self, tag: str, encoded: bytes, height: int, width: int, colorspace: int, step: int,
                  wall_time: float | None = None) -> None:
        self._write(event(step, time.time() if wall_time is None else wall_time,
                          [image_value(tag, encoded, height, width, colorspace)]))

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def close(self) -> None:
        """Idempotent; later writes raise."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> "EventFileWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
