#!/usr/bin/python3
"""Where a packed model's bytes go: payloads against per-layer headers, by header field.

usage: pack_headers.py FILE ...
       pack_headers.py --packers PACK_A,PACK_B MODEL [weightcast-pack options]

The first form reads .wcm files or single packed layers (a server's blobs, DATA/blobs/*/*;
docs/FORMAT.md). The second packs MODEL with each
weightcast-pack binary into a temporary directory (same options, default tiers) and reports
every tier file of each, side by side: a header change measured against the build before it.
Per file: total bytes, payload bytes, header bytes (magic, length and PackedLayerHeader), and
the header's bytes per field (tag, length and value), largest first. Field names come from
proto/weightcast/v1/packed_layer.proto.
"""
import collections
import os
import re
import struct
import subprocess
import sys
import tempfile

PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto", "weightcast",
                     "v1", "packed_layer.proto")


def field_names():
    text = open(PROTO).read()
    message = text[text.index("message PackedLayerHeader"):]
    return {int(n): name for name, n in re.findall(r"^\s*(?:repeated\s+)?\w+\s+(\w+)\s*=\s*(\d+);",
                                                    message, re.M)}


def varint(data, at):
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def fields(header):
    """(field number, bytes on the wire including its tag, value) for each field in the
    header: the value is the integer of a varint, the bytes of a length-delimited field."""
    at = 0
    while at < len(header):
        start = at
        key, at = varint(header, at)
        number, wire = key >> 3, key & 7
        value = None
        if wire == 0:
            value, at = varint(header, at)
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        elif wire == 2:
            length, at = varint(header, at)
            value = header[at:at + length]
            at += length
        else:
            raise ValueError(f"wire type {wire}")
        yield number, at - start, value


def tile_bytes(value):
    """The payload bytes a tile_bytes field (13) counts, packed or not."""
    if isinstance(value, int):
        return value
    total, at = 0, 0
    while at < len(value):
        size, at = varint(value, at)
        total += size
    return total


def measure(path):
    data = open(path, "rb").read()
    if data[:4] == b"WCM1":
        count, at = struct.unpack("<I", data[4:8])[0], 8
    elif data[:4] == b"WCL1":
        count, at = 1, 0  # one packed layer
    else:
        return None
    sizes = collections.Counter()
    headers = payload = 0
    for _ in range(count):
        if data[at:at + 4] != b"WCL1":
            sys.exit(f"{path}: a layer without its magic at byte {at}")
        length = struct.unpack("<I", data[at + 4:at + 8])[0]
        tiles = 0
        for number, size, value in fields(data[at + 8:at + 8 + length]):
            sizes[number] += size
            if number == 13:
                tiles += tile_bytes(value)
        headers += 8 + length
        payload += tiles
        at += 8 + length + tiles
    if at != len(data):
        sys.exit(f"{path}: {len(data) - at} bytes after the last layer")
    return {"layers": count, "bytes": len(data), "payload": payload, "headers": headers,
            "fields": sizes}


def report(label, result, names):
    print(f"{label}: {result['layers']} layers, {result['bytes']} bytes: payload "
          f"{result['payload']}, headers {result['headers']} "
          f"({100.0 * result['headers'] / result['bytes']:.1f} %; magic and length "
          f"{8 * result['layers']})")
    for number, size in result["fields"].most_common():
        print(f"    {names.get(number, number):22} {size:7}")


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return
    names = field_names()
    if args[0] != "--packers":
        total = {"layers": 0, "bytes": 0, "payload": 0, "headers": 0,
                 "fields": collections.Counter()}
        for path in args:
            result = measure(path)
            if result is None:
                print(f"{path}: not a packed model or layer, skipped", file=sys.stderr)
                continue
            report(path, result, names)
            for key in ("layers", "bytes", "payload", "headers"):
                total[key] += result[key]
            total["fields"].update(result["fields"])
        if len(args) > 1 and total["bytes"]:
            report("all files", total, names)
        return
    if len(args) < 3:
        sys.exit("pack_headers.py: --packers PACK_A,PACK_B MODEL [options]")
    packers, model, options = args[1].split(","), args[2], args[3:]
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for i, packer in enumerate(packers):
            out = os.path.join(work, str(i))
            subprocess.run([packer, model, "-o", out] + options, check=True,
                           stdout=subprocess.DEVNULL)
            for name in sorted(os.listdir(out)):
                result = measure(os.path.join(out, name))
                if result is not None:
                    results.setdefault(name, []).append(result)
    for name, per_packer in results.items():
        for packer, result in zip(packers, per_packer):
            report(f"{name} ({packer})", result, names)
        base = per_packer[0]["bytes"]
        print(f"  {name}: " + ", ".join(f"{r['bytes']} B ({r['bytes'] - base:+d})"
                                        for r in per_packer))


if __name__ == "__main__":
    main()
