#!/usr/bin/env python3
"""Batch lines for the shell benches: LINES lines of POST /v1/verify/batch
made from ROWS (rows.tsv of a store kept by `http_bench --keep`: key, name,
birth date), taking the persons in turn; with WRONG_EVERY n > 0, every nth
line claims a wrong birth date.

    benches/batch-lines.py ROWS LINES OUT [WRONG_EVERY]   (LINES 0: one line a row)
"""
import json
import sys

rows_path, lines, out_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
wrong_every = int(sys.argv[4]) if len(sys.argv) > 4 else 0
rows = [l.rstrip("\n").split("\t") for l in open(rows_path, encoding="utf-8") if l.strip()]
with open(out_path, "w", encoding="utf-8") as out:
    for i in range(lines or len(rows)):
        key, name, birth = rows[i % len(rows)][:3]
        if wrong_every and i % wrong_every == wrong_every - 1:
            birth = "1900-01-01"
        out.write(json.dumps({"ref": f"r{i}", "subject": "person", "key": key,
                              "fields": {"name": name, "birth_date": birth}}, ensure_ascii=False) + "\n")
