"""HeadTail (extproc/largejson.py): the ends of an answer too large to hold, in any chunking.

Invariants: never raises; ``length`` is the body's length; what it reads (usage object or
None, model string or None) does not depend on how the body was cut into chunks.
"""

from __future__ import annotations

import itertools

import atheris
from _common import argv, guard

with atheris.instrument_imports():
    from extproc.largejson import HeadTail


def check(data: bytes) -> None:
    # data[0]: how many cuts; then three bytes per cut (bodies run past 64 KiB); the rest is
    # the body.
    count = data[0] % 9 if data else 0
    head, body = data[1 : 1 + 3 * count], data[1 + 3 * count :]
    cuts = [int.from_bytes(head[i : i + 3], "big") for i in range(0, len(head), 3)]
    bounds = [0, *sorted(c % (len(body) + 1) for c in cuts), len(body)]
    cut = HeadTail()
    for a, b in itertools.pairwise(bounds):
        cut.feed(body[a:b])
    whole = HeadTail()
    whole.feed(body)
    if cut.length != len(body):
        raise AssertionError("length is not the body's")
    fields = cut.fields()
    if fields != whole.fields():
        raise AssertionError("what was read depends on the chunking")
    usage, model = fields
    if not (usage is None or isinstance(usage, dict)) or not (
        model is None or isinstance(model, str)
    ):
        raise AssertionError("fields of the wrong type")


def main() -> None:
    atheris.Setup(argv(), guard("largejson", check))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
