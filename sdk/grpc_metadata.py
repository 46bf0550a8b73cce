"""gRPC metadata on Weir's wire: (key, value) pairs as `weir.Header`s and back.

gRPC gives a binary key (ending in "-bin") a bytes value and every other key a str; the
ingress and the replica keep that rule on both sides of the hop.
"""

from __future__ import annotations

from collections.abc import Iterable

from weir.protos import weir_pb2 as pb

MetadataValue = str | bytes


def metadata_headers(pairs: Iterable[tuple[str, MetadataValue]]) -> list[pb.Header]:
    """gRPC metadata as headers (str values UTF-8 encoded)."""
    return [pb.Header(name=key.encode(),
                      value=value if isinstance(value, bytes) else value.encode())
            for key, value in pairs]


def metadata_pairs(headers: Iterable[pb.Header]) -> list[tuple[str, MetadataValue]]:
    """Headers as gRPC metadata: bytes values for "-bin" keys, str for the others."""
    pairs: list[tuple[str, MetadataValue]] = []
    for header in headers:
        key = header.name.decode()
        pairs.append((key, header.value if key.endswith("-bin") else header.value.decode()))
    return pairs
