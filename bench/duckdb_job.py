#!/usr/bin/env python3
"""The DuckDB side of scripts/bench.sh: the same job billpipe does, CSV -> typed, zstd,
Hive-partitioned Parquet, with the same declared types (no sniffing), the same null tokens and
the same partition rule (month of BillingPeriodStart at UTC+8, BillingAccountId).

usage: duckdb_job.py SCHEMA_TOML CSV_FILE OUT_DIR
"""
import sys
import tomllib

import duckdb

TYPES = {
    "string": "VARCHAR",
    "json": "VARCHAR",
    "decimal": "DECIMAL(38,18)",
    "timestamp": "TIMESTAMPTZ",
}


def main(schema_path, csv_path, out_dir):
    with open(schema_path, "rb") as fh:
        schema = tomllib.load(fh)
    with open(csv_path, encoding="utf-8-sig") as fh:
        header = fh.readline().rstrip("\r\n").split(",")
    known = {c["name"]: TYPES[c["type"]] for c in schema["column"]}
    columns = {name: known.get(name, "VARCHAR") for name in header}
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    cols = "{" + ", ".join(f"'{k}': '{v}'" for k, v in columns.items()) + "}"
    con.execute(
        f"""
        COPY (
          SELECT *,
                 strftime(BillingPeriodStart + INTERVAL 8 HOUR, '%Y-%m') AS billing_period,
                 BillingAccountId AS billing_account_id
          FROM read_csv('{csv_path}', header = true, auto_detect = false, columns = {cols},
                        nullstr = ['', 'NULL', '-'], quote = '"', escape = '"')
        ) TO '{out_dir}' (FORMAT parquet, COMPRESSION zstd,
                          PARTITION_BY (billing_period, billing_account_id), OVERWRITE_OR_IGNORE)
        """
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
