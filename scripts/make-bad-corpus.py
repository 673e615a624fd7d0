#!/usr/bin/env python3
"""Regenerates testdata/bad/: one object per kind of broken input, each named like a real
Tencent FOCUS daily (so it is recognised and must be judged), plus one good file that must
still load. Deterministic; run from the repository root."""
import os
import random
import shutil

OUT = "testdata/bad"
GOOD = "testdata/bucket/billing/focus/FOCUS-bill_details-200020002001-20251203.CSV"


def name(n):
    return f"{OUT}/FOCUS-bill_details-5000000000{n:02d}-20251204.CSV"


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    good = open(GOOD, "rb").read()
    header, rest = good.split(b"\r\n", 1)
    rows = rest.split(b"\r\n")
    shutil.copy(GOOD, f"{OUT}/FOCUS-bill_details-200020002001-20251203.CSV")

    open(name(1), "wb").close()  # empty object
    open(name(2), "wb").write(header + b"\r\n")  # header only
    # invalid UTF-8: the third data row's Chinese text in GBK (as an old export might be)
    bad = rows[2].replace("示例科技有限公司".encode(), "示例科技有限公司".encode("gbk"))
    open(name(3), "wb").write(b"\r\n".join([header] + rows[:2] + [bad] + rows[3:]))
    # wrong delimiter: semicolons
    open(name(4), "wb").write(header.replace(b",", b";") + b"\r\n" + rows[0].replace(b",", b";") + b"\r\n")
    # duplicated header names
    dup = header.replace(b"ChargeClass", b"ChargeCategory", 1)
    open(name(5), "wb").write(b"\r\n".join([dup] + rows))
    # a line with a huge field (9 MiB, over the 8 MiB record limit)
    huge = rows[1].replace(b"https://", b"https://" + b"A" * (9 << 20), 1)
    open(name(6), "wb").write(b"\r\n".join([header, rows[0], huge] + rows[2:]))
    # unterminated quote at the end of the file
    open(name(7), "wb").write(b"\r\n".join([header] + rows[:3]) + b'\r\n' + rows[3].rsplit(b",", 1)[0] + b',"{""a"":1')
    # binary garbage with a .CSV name
    rnd = random.Random(7)
    open(name(8), "wb").write(bytes(rnd.randrange(256) for _ in range(4096)))


if __name__ == "__main__":
    main()
