#!/usr/bin/env python3
"""The `dlt` side of the etlworks-agent benchmark: one load per invocation, run by bench.py.

bench.py starts this script as a fresh subprocess for each load, so the wall time it measures
includes what a dlt user waits for (interpreter start, imports, extract, normalize, load) and
the peak RSS it reads with wait4() is this process's alone. The script prints one JSON line on
stdout: {"load": ..., "rows": N, "seconds": S} where S is the time spent in pipeline.run().

Loads (all with dlt's defaults apart from the pipeline directory and telemetry):
  csv   CSV file -> SQLite, through dlt's `sqlalchemy` destination (dlt has no native SQLite
        destination; `sqlalchemy` with a sqlite:/// URL is the supported way). The CSV is read
        by a plain resource (csv.DictReader, ints and floats converted, date/timestamp columns
        declared as hints), yielding lists of 10,000 rows.
  api   the paginated HTTP API -> PostgreSQL, through dlt's `rest_api` source
        (page_number paginator, `data` selector) and the `postgres` destination.
  pg    a PostgreSQL table -> PostgreSQL, through dlt's `sql_database` source (default
        sqlalchemy backend) and the `postgres` destination.

Everything dlt writes goes under --work-dir (pipelines_dir, DLT_DATA_DIR is set by bench.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from typing import Any, Iterator

import dlt

# Columns of the generated CSV (bench.py's ORDERS_COLUMNS) and how the resource types them.
CSV_INT_COLUMNS = {"id", "customer_id", "quantity"}
CSV_FLOAT_COLUMNS = {"unit_price", "discount"}
CSV_HINTS = {
    "order_date": {"data_type": "date"},
    "shipped_at": {"data_type": "timestamp"},
}
CHUNK = 10_000


def csv_rows(path: str) -> Iterator[list[dict[str, Any]]]:
    """Reads the CSV in chunks of CHUNK typed rows (the way a dlt user loads a local CSV
    without pandas)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        chunk: list[dict[str, Any]] = []
        for row in reader:
            for key in CSV_INT_COLUMNS:
                row[key] = int(row[key])
            for key in CSV_FLOAT_COLUMNS:
                row[key] = float(row[key])
            chunk.append(row)
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def run_csv(args: argparse.Namespace) -> int:
    resource = dlt.resource(
        csv_rows(args.file), name=args.table, write_disposition="append", columns=CSV_HINTS
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench_csv",
        pipelines_dir=args.work_dir,
        destination=dlt.destinations.sqlalchemy(credentials=f"sqlite:///{args.sqlite_path}"),
        dataset_name=args.dataset,
    )
    info = pipeline.run(resource)
    info.raise_on_failed_jobs()
    return _row_count(pipeline, args.table)


def run_api(args: argparse.Namespace) -> int:
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(
        {
            "client": {
                "base_url": args.base_url,
                "paginator": {
                    "type": "page_number",
                    "base_page": 1,
                    "page_param": "page",
                    "total_path": None,
                },
            },
            "resource_defaults": {"write_disposition": "append"},
            "resources": [
                {
                    "name": args.table,
                    "endpoint": {
                        "path": "records",
                        "params": {"per_page": args.page_size},
                        "data_selector": "data",
                    },
                }
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench_api",
        pipelines_dir=args.work_dir,
        destination=dlt.destinations.postgres(credentials=args.pg_url),
        dataset_name=args.dataset,
    )
    info = pipeline.run(source)
    info.raise_on_failed_jobs()
    return _row_count(pipeline, args.table)


def run_pg(args: argparse.Namespace) -> int:
    from dlt.sources.sql_database import sql_database

    # SQLAlchemy 2.1 defaults postgresql:// to psycopg 3; dlt[postgres] brings psycopg2.
    source_url = args.pg_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    source = sql_database(
        credentials=source_url, schema=args.source_schema, table_names=[args.source_table]
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench_pg",
        pipelines_dir=args.work_dir,
        destination=dlt.destinations.postgres(credentials=args.pg_url),
        dataset_name=args.dataset,
    )
    info = pipeline.run(source, write_disposition="append")
    info.raise_on_failed_jobs()
    return _row_count(pipeline, args.source_table)


def _row_count(pipeline: Any, table: str) -> int:
    """Rows dlt reports as normalized into `table` in the last run."""
    counts = pipeline.last_trace.last_normalize_info.row_counts
    return int(counts.get(table, 0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("load", choices=["csv", "api", "pg"])
    parser.add_argument("--work-dir", required=True, help="pipelines_dir for dlt's state")
    parser.add_argument("--dataset", required=True, help="dlt dataset (schema) name")
    parser.add_argument("--table", default="orders")
    parser.add_argument("--file", help="csv: the CSV file")
    parser.add_argument("--sqlite-path", help="csv: the SQLite database file")
    parser.add_argument("--base-url", help="api: base URL of bench-api")
    parser.add_argument("--page-size", type=int, default=10_000)
    parser.add_argument("--pg-url", help="api, pg: postgresql:// URL of the benchmark database")
    parser.add_argument("--source-schema", default="public")
    parser.add_argument("--source-table", default="src_orders")
    args = parser.parse_args()

    started = time.perf_counter()
    rows = {"csv": run_csv, "api": run_api, "pg": run_pg}[args.load](args)
    seconds = time.perf_counter() - started
    print(json.dumps({"load": args.load, "rows": rows, "seconds": round(seconds, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
