#!/usr/bin/env python3
"""Throughput benchmark driver for etlworks-agent (run it through benches/run.sh).

For each of three loads it generates the data, then runs the same load with our binary, with
`psql \\copy` (the physical limit) and with dlt, in the same run, and prints one table:

  1. csv    N CSV rows x 10 columns -> our `warehouse` SQLite (the \\copy reference loads the same
            CSV into a PostgreSQL table; `sqlite3 .import` is shown too, as SQLite's own limit).
  2. api    N JSON records from a local paginated HTTP API (benches/api, `bench-api`) ->
            PostgreSQL (\\copy loads the same records as CSV).
  3. pg     an N-row PostgreSQL table -> another PostgreSQL table
            (\\copy: `\\copy (select ...) to stdout | psql \\copy ... from stdin`).

Then it runs our loads 1 and 2 again at each --memory-rows size and prints our peak RSS per
size, so it is visible whether memory stays flat as the row count grows.

Every tool runs as a fresh subprocess: "seconds" is its wall time (what a user waits for,
process start included) and "peak RSS" its ru_maxrss from wait4() (the largest process of the
tool's process tree; PostgreSQL's own server processes are not counted for anyone). Each load is
verified by counting the rows that arrived.

Everything is written under a fresh /tmp/etl-bench-* directory and a fresh PostgreSQL database
(etl_bench_<pid>_<time>), both removed at the end (--keep keeps them).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# Load 1: the CSV's columns and the PostgreSQL types \copy loads them into.
ORDERS_COLUMNS = [
    ("id", "bigint"),
    ("customer_id", "bigint"),
    ("product", "text"),
    ("quantity", "integer"),
    ("unit_price", "double precision"),
    ("discount", "double precision"),
    ("status", "text"),
    ("city", "text"),
    ("order_date", "date"),
    ("shipped_at", "timestamp"),
]
# Load 2: the flattened columns of the API's records (address is a nested object).
API_COLUMNS = [
    ("id", "bigint"),
    ("name", "text"),
    ("email", "text"),
    ("active", "boolean"),
    ("score", "double precision"),
    ("amount", "double precision"),
    ("status", "text"),
    ("created_at", "timestamptz"),
    ("address_city", "text"),
    ("address_zip", "text"),
]
PRODUCTS = [
    "Widget",
    "Gadget",
    "Gizmo, large",
    'Sprocket "Pro"',
    "Doohickey",
    "Thingamajig",
    "Whatsit",
    "Flange",
]
STATUSES = ["new", "paid", "shipped", "delivered", "returned", "canceled"]
CITIES = ["Paris", "Berlin", "New York", "São Paulo", "Tokyo", "Lagos", "Sydney", "Toronto"]
API_PAGE_SIZE = 10_000
BATCH_SIZE = 10_000


# ---------------------------------------------------------------------------------------------
# Data generation
# ---------------------------------------------------------------------------------------------


def generate_orders_csv(path: Path, rows: int, seed: int = 1) -> None:
    """Writes `rows` orders as CSV: ints, floats, text (some quoted), dates and timestamps."""
    rnd = random.Random(seed)
    base_day = date(2020, 1, 1)
    base_ts = datetime(2020, 1, 1)
    days = [(base_day + timedelta(days=d)).isoformat() for d in range(1500)]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([name for name, _ in ORDERS_COLUMNS])
        chunk = []
        for i in range(1, rows + 1):
            d = rnd.randrange(1500)
            shipped = base_ts + timedelta(days=d, seconds=rnd.randrange(86400 * 3))
            chunk.append(
                (
                    i,
                    rnd.randrange(1, 200_000),
                    rnd.choice(PRODUCTS),
                    rnd.randrange(1, 50),
                    round(rnd.uniform(0.5, 999.0), 2),
                    round(rnd.random() * 0.3, 4),
                    rnd.choice(STATUSES),
                    rnd.choice(CITIES),
                    days[d],
                    shipped.strftime("%Y-%m-%d %H:%M:%S"),
                )
            )
            if len(chunk) == 50_000:
                writer.writerows(chunk)
                chunk.clear()
        writer.writerows(chunk)


def generate_api_records(ndjson: Path, csv_path: Path | None, rows: int, seed: int = 2) -> None:
    """Writes `rows` JSON records as NDJSON (served by bench-api) and, when csv_path is given,
    the same records flattened as CSV (what \\copy loads)."""
    rnd = random.Random(seed)
    base_ts = datetime(2021, 6, 1)
    out_csv = csv_path.open("w", newline="", encoding="utf-8") if csv_path else None
    writer = csv.writer(out_csv, lineterminator="\n") if out_csv else None
    try:
        if writer:
            writer.writerow([name for name, _ in API_COLUMNS])
        with ndjson.open("w", encoding="utf-8") as out:
            lines: list[str] = []
            csv_rows: list[tuple] = []
            for i in range(1, rows + 1):
                name = f"user {i}"
                email = f"user{i}@example.com"
                active = rnd.random() < 0.8
                score = round(rnd.random() * 100, 3)
                amount = round(rnd.uniform(1, 5000), 2)
                status = rnd.choice(STATUSES)
                created = (base_ts + timedelta(seconds=rnd.randrange(86400 * 900))).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                )
                city = rnd.choice(CITIES)
                zipcode = f"{rnd.randrange(10000, 99999)}"
                record = {
                    "id": i,
                    "name": name,
                    "email": email,
                    "active": active,
                    "score": score,
                    "amount": amount,
                    "status": status,
                    "created_at": created,
                    "address": {"city": city, "zip": zipcode},
                }
                lines.append(json.dumps(record, ensure_ascii=False))
                if writer:
                    csv_rows.append(
                        (i, name, email, active, score, amount, status, created, city, zipcode)
                    )
                if len(lines) == 50_000:
                    out.write("\n".join(lines) + "\n")
                    lines.clear()
                    if writer:
                        writer.writerows(csv_rows)
                    csv_rows.clear()
            if lines:
                out.write("\n".join(lines) + "\n")
            if writer:
                writer.writerows(csv_rows)
    finally:
        if out_csv:
            out_csv.close()


# ---------------------------------------------------------------------------------------------
# Running and measuring
# ---------------------------------------------------------------------------------------------


@dataclass
class Measured:
    """One subprocess run: wall seconds, peak RSS of its process tree, exit code, output."""

    seconds: float
    peak_rss_kb: int
    returncode: int
    stdout: str
    stderr: str


GNU_TIME = "/usr/bin/time" if Path("/usr/bin/time").exists() else None


def measure(
    cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> Measured:
    """Runs cmd as a fresh child, timing it. Peak RSS comes from GNU time's %M (the child is
    forked from the small `time` process, so the driver's own memory is not counted as it would
    be for a child forked from Python); without GNU time, from wait4() (then it is an upper bound
    that can include this Python process's size at fork time)."""
    with tempfile.TemporaryDirectory(prefix="measure-", dir="/tmp") as tmp:
        rss_file = Path(tmp) / "rss"
        full = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *cmd] if GNU_TIME else list(cmd)
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            started = time.perf_counter()
            proc = subprocess.Popen(full, stdout=out, stderr=err, env=env, cwd=cwd)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode("utf-8", "replace")
            stderr = err.read().decode("utf-8", "replace")
        peak = int(usage.ru_maxrss)
        if GNU_TIME and rss_file.exists():
            lines = [ln for ln in rss_file.read_text().splitlines() if ln.strip()]
            if lines and lines[-1].strip().isdigit():
                peak = int(lines[-1].strip())
        return Measured(seconds, peak, proc.returncode, stdout, stderr)


def check(cmd: Sequence[str], env: dict[str, str] | None = None, what: str = "") -> str:
    """Runs an untimed setup command and fails loudly if it fails."""
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(
            f"{what or shlex.join(cmd)} failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}"
        )
    return res.stdout


@dataclass
class Result:
    """One row of the results table."""

    load: str
    tool: str
    rows: int | None
    seconds: float | None
    peak_rss_kb: int | None
    note: str = ""
    error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        if self.error or not self.rows or not self.seconds:
            return None
        return self.rows / self.seconds


class Postgres:
    """psql against the benchmark's own database."""

    def __init__(self, host: str, port: int, user: str, admin_db: str, database: str):
        self.host, self.port, self.user = host, port, user
        self.admin_db, self.database = admin_db, database
        self.env = dict(os.environ, PGHOST=host, PGPORT=str(port), PGUSER=user)

    @property
    def dlt_url(self) -> str:
        """URL for dlt: its postgres credentials insist on a password, so a placeholder one is
        given (the benchmark server uses trust authentication, which ignores it)."""
        return f"postgresql://{self.user}:trust@{self.host}:{self.port}/{self.database}"

    def psql_cmd(self, command: str, database: str | None = None) -> list[str]:
        return [
            "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database or self.database,
            "-c", command,
        ]  # fmt: skip

    def run(self, command: str, database: str | None = None) -> str:
        return check(self.psql_cmd(command, database), self.env, f"psql -c {command!r}")

    def scalar(self, query: str) -> str:
        out = check(
            ["psql", "-X", "-At", "-d", self.database, "-c", query], self.env, f"psql {query!r}"
        )
        return out.strip()

    def count(self, table: str) -> int:
        return int(self.scalar(f"select count(*) from {table}"))

    def create(self) -> None:
        self.run(f'create database "{self.database}"', self.admin_db)

    def drop(self) -> None:
        self.run(f'drop database if exists "{self.database}" with (force)', self.admin_db)


class Agent:
    """Our binary with one data directory."""

    def __init__(self, binary: Path, data_dir: Path):
        self.binary, self.data_dir = binary, data_dir
        self.env = dict(os.environ)
        self.env.pop("ETLWORKS_AGENT_DATA_DIR", None)

    def cmd(self, script: str, json_out: bool = False) -> list[str]:
        base = [str(self.binary), "--data-dir", str(self.data_dir), "host"]
        return base + (["--json"] if json_out else []) + [script]

    def setup(self, script: str) -> None:
        check(self.cmd(script), self.env, f"etlworks-agent host {script!r}")

    def run_flow(self, load: str, flow: str, rows_expected: int) -> Result:
        m = measure(self.cmd(f"run flow {flow} --wait", json_out=True), self.env)
        if m.returncode != 0:
            return Result(load, "etlworks-agent", None, m.seconds, m.peak_rss_kb,
                          error=_tail(m.stderr or m.stdout))  # fmt: skip
        data = json.loads(m.stdout)["data"]
        extra = {"engine_ms": data.get("duration_ms"), "batches": data.get("batches")}
        res = Result(load, "etlworks-agent", data.get("rows_written"), m.seconds, m.peak_rss_kb,
                     note=f"engine {data.get('duration_ms')} ms", extra=extra)  # fmt: skip
        if data.get("status") != "success":
            res.error = f"run {data.get('status')}: {data.get('error')}"
        elif res.rows != rows_expected:
            res.error = f"wrote {res.rows} rows, expected {rows_expected}"
        return res

    def logs(self, flow: str) -> str:
        return check(self.cmd(f"logs flow {flow}"), self.env)


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


class ApiServer:
    """bench-api serving an NDJSON file, started on a free loopback port."""

    def __init__(self, binary: Path, ndjson: Path, page_size: int):
        self.proc = subprocess.Popen(
            [str(binary), "--ndjson", str(ndjson), "--page-size", str(page_size),
             "--bind", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        match = re.match(r"listening on (http://\S+)", line)
        if not match:
            self.stop()
            raise RuntimeError(f"bench-api did not start (said {line!r})")
        self.url = match.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rows: int = args.rows
        self.work = Path(tempfile.mkdtemp(prefix="etl-bench-", dir="/tmp"))
        self.pg = Postgres(args.pg_host, args.pg_port, args.pg_user, args.pg_admin_db,
                           f"etl_bench_{os.getpid()}_{int(time.time())}")  # fmt: skip
        self.results: list[Result] = []
        self.memory: list[tuple[str, int, Result]] = []
        self.dlt_env = dict(
            os.environ,
            DLT_DATA_DIR=str(self.work / "dlt_home"),
            RUNTIME__DLTHUB_TELEMETRY="false",
            RUNTIME__LOG_LEVEL="WARNING",
        )

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def agent(self, name: str) -> Agent:
        agent = Agent(self.args.binary, self.work / f"agent_{name}")
        agent.setup(
            f"create connection pg type=postgres host={self.pg.host} port={self.pg.port} "
            f"user={self.pg.user} database={self.pg.database}"
        )
        return agent

    # -- tools -----------------------------------------------------------------------------

    def copy_in(self, load: str, table: str, columns: list, csv_path: Path, rows: int) -> Result:
        """\\copy a CSV into a fresh PostgreSQL table (the table is created untimed)."""
        cols = ", ".join(f"{name} {typ}" for name, typ in columns)
        self.pg.run(f"create table {table} ({cols})")
        m = measure(self.pg.psql_cmd(f"\\copy {table} from '{csv_path}' with (format csv, header true)"),
                    self.pg.env)  # fmt: skip
        return self._verified(Result(load, "psql \\copy", rows, m.seconds, m.peak_rss_kb),
                              m, lambda: self.pg.count(table), rows)  # fmt: skip

    def copy_pipe(self, load: str, source: str, target: str, rows: int) -> Result:
        """\\copy (select ...) to stdout | \\copy target from stdin."""
        self.pg.run(f"create table {target} (like {source})")
        out = shlex.join(self.pg.psql_cmd(f"\\copy (select * from {source}) to stdout"))
        inn = shlex.join(self.pg.psql_cmd(f"\\copy {target} from stdin"))
        m = measure(["bash", "-c", f"set -o pipefail; {out} | {inn}"], self.pg.env)
        return self._verified(Result(load, "psql \\copy", rows, m.seconds, m.peak_rss_kb,
                                     note="COPY TO stdout | COPY FROM stdin"),
                              m, lambda: self.pg.count(target), rows)  # fmt: skip

    def sqlite_import(self, csv_path: Path, rows: int) -> Result:
        """sqlite3's .import into a pre-created table: SQLite's own loading limit."""
        if not shutil.which("sqlite3"):
            return Result("1 csv", "sqlite3 .import", None, None, None, error="sqlite3 not installed")
        db = self.work / "sqlite_import.db"
        cols = ", ".join(
            f'"{n}" {"INTEGER" if t in ("bigint", "integer") else "REAL" if t == "double precision" else "TEXT"}'
            for n, t in ORDERS_COLUMNS
        )
        check(["sqlite3", str(db), f"PRAGMA journal_mode=WAL; create table orders ({cols});"])
        m = measure(["sqlite3", str(db), f".import --csv --skip 1 {csv_path} orders"])
        return self._verified(
            Result("1 csv", "sqlite3 .import", rows, m.seconds, m.peak_rss_kb, note="reference only"),
            m, lambda: _sqlite_count(db, "orders"), rows)  # fmt: skip

    def dlt(self, load: str, argv: list[str], count, rows: int, note: str) -> Result:
        if self.args.skip_dlt:
            return Result(load, "dlt", None, None, None, error="skipped (--skip-dlt)")
        python = self.args.python
        cmd = [python, str(HERE / "dlt_loads.py"), *argv, "--work-dir", str(self.work / "dlt")]
        cwd = self.work / "dlt"
        cwd.mkdir(exist_ok=True)
        m = measure(cmd, self.dlt_env, cwd=cwd)
        res = Result(load, "dlt", rows, m.seconds, m.peak_rss_kb, note=note)
        if m.returncode == 0:
            try:
                res.extra["dlt_run_s"] = json.loads(m.stdout.strip().splitlines()[-1])["seconds"]
                res.note += f"; run() {res.extra['dlt_run_s']:.1f} s"
            except (ValueError, KeyError, IndexError):
                pass
        return self._verified(res, m, count, rows)

    def _verified(self, res: Result, m: Measured, count, rows: int) -> Result:
        if m.returncode != 0:
            res.error = f"exit {m.returncode}: {_tail(m.stderr or m.stdout)}"
            res.rows = None
            return res
        try:
            got = count()
        except Exception as exc:  # noqa: BLE001 - reported in the table
            res.error = f"could not count rows: {exc}"
            return res
        if got != rows:
            res.error = f"loaded {got} rows, expected {rows}"
        res.rows = got
        return res

    # -- loads -----------------------------------------------------------------------------

    def load_csv(self, csv_dir: Path) -> None:
        n, csv_path, load = self.rows, csv_dir / "orders.csv", "1 csv"
        agent = self.agent("csv")
        agent.setup(
            f"create connection inbox type=file directory={csv_dir}; "
            f"create flow csv_sqlite source=inbox object='orders.csv' destination=warehouse "
            f"target=orders mode=append batch_size={BATCH_SIZE}"
        )
        self.log(f"load 1: etlworks-agent, {n} CSV rows -> warehouse SQLite")
        res = agent.run_flow(load, "csv_sqlite", n)
        if not res.error:
            got = _sqlite_count(agent.data_dir / "warehouse.db", "orders")
            if got != n:
                res.error = f"warehouse has {got} rows, expected {n}"
        res.extra["logs"] = agent.logs("csv_sqlite")
        self.results.append(res)
        self.log("load 1: psql \\copy (same CSV -> PostgreSQL)")
        self.results.append(self.copy_in(load, "src_orders", ORDERS_COLUMNS, csv_path, n))
        self.log("load 1: sqlite3 .import (reference)")
        self.results.append(self.sqlite_import(csv_path, n))
        self.log("load 1: dlt (csv -> sqlalchemy/SQLite)")
        sqlite_path = self.work / "dlt_csv.db"
        self.results.append(
            self.dlt(load, ["csv", "--file", str(csv_path), "--sqlite-path", str(sqlite_path),
                            "--dataset", "main", "--table", "orders"],
                     lambda: _sqlite_count(sqlite_path, "orders"), n,
                     "sqlalchemy destination, sqlite:///")  # fmt: skip
        )

    def load_api(self, ndjson: Path, api_csv: Path) -> None:
        n, load = self.rows, "2 api"
        api = ApiServer(self.args.api_binary, ndjson, API_PAGE_SIZE)
        try:
            agent = self.agent("api")
            agent.setup(
                f"create connection api type=http url={api.url}; "
                f"create flow api_pg source=api object=/records source.pagination=page "
                f"source.page_size={API_PAGE_SIZE} source.records_path=data destination=pg "
                f"target=api_ours mode=append batch_size={BATCH_SIZE}"
            )
            self.log(f"load 2: etlworks-agent, {n} records from {api.url} -> PostgreSQL")
            res = agent.run_flow(load, "api_pg", n)
            if not res.error and (got := self.pg.count("api_ours")) != n:
                res.error = f"api_ours has {got} rows, expected {n}"
            res.extra["logs"] = agent.logs("api_pg")
            self.results.append(res)
            self.log("load 2: psql \\copy (same records as CSV)")
            self.results.append(self.copy_in(load, "api_copy", API_COLUMNS, api_csv, n))
            self.log("load 2: dlt (rest_api -> postgres)")
            self.results.append(
                self.dlt(load, ["api", "--base-url", api.url, "--page-size", str(API_PAGE_SIZE),
                                "--pg-url", self.pg.dlt_url, "--dataset", "dlt_api", "--table", "records"],
                         lambda: self.pg.count("dlt_api.records"), n,
                         "rest_api source, postgres destination")  # fmt: skip
            )
        finally:
            api.stop()

    def load_pg(self) -> None:
        n, load = self.rows, "3 pg"
        agent = self.agent("pg")
        agent.setup(
            f"create flow pg_pg source=pg object=src_orders destination=pg target=pg_ours "
            f"mode=append batch_size={BATCH_SIZE}"
        )
        self.log(f"load 3: etlworks-agent, {n}-row table -> PostgreSQL table")
        res = agent.run_flow(load, "pg_pg", n)
        if not res.error and (got := self.pg.count("pg_ours")) != n:
            res.error = f"pg_ours has {got} rows, expected {n}"
        res.extra["logs"] = agent.logs("pg_pg")
        self.results.append(res)
        self.log("load 3: psql \\copy to stdout | \\copy from stdin")
        self.results.append(self.copy_pipe(load, "src_orders", "pg_copy", n))
        self.log("load 3: dlt (sql_database -> postgres)")
        self.results.append(
            self.dlt(load, ["pg", "--pg-url", self.pg.dlt_url, "--dataset", "dlt_pg",
                            "--source-table", "src_orders"],
                     lambda: self.pg.count("dlt_pg.src_orders"), n,
                     "sql_database source (sqlalchemy backend), postgres destination")  # fmt: skip
        )

    def memory_check(self, sizes: list[int], csv_dir: Path, ndjson: Path) -> None:
        """Our loads 1 and 2 at each size, each into a fresh destination, for peak RSS."""
        for size in sizes:
            if size == self.rows:
                m_csv_dir, m_ndjson = csv_dir, ndjson
            else:
                m_csv_dir = self.work / f"mem_csv_{size}"
                m_csv_dir.mkdir()
                self.log(f"memory: generating {size} CSV rows and {size} API records")
                generate_orders_csv(m_csv_dir / "orders.csv", size)
                m_ndjson = self.work / f"mem_api_{size}.ndjson"
                generate_api_records(m_ndjson, None, size)
            agent = self.agent(f"mem_{size}")
            agent.setup(
                f"create connection inbox type=file directory={m_csv_dir}; "
                f"create flow csv_sqlite source=inbox object='orders.csv' destination=warehouse "
                f"target=orders mode=append batch_size={BATCH_SIZE}"
            )
            self.log(f"memory: etlworks-agent load 1 at {size} rows")
            self.memory.append(("1 csv", size, agent.run_flow("1 csv", "csv_sqlite", size)))
            (agent.data_dir / "warehouse.db").unlink(missing_ok=True)
            api = ApiServer(self.args.api_binary, m_ndjson, API_PAGE_SIZE)
            try:
                table = f"api_mem_{size}"
                agent.setup(
                    f"create connection api type=http url={api.url}; "
                    f"create flow api_pg source=api object=/records source.pagination=page "
                    f"source.page_size={API_PAGE_SIZE} source.records_path=data destination=pg "
                    f"target={table} mode=append batch_size={BATCH_SIZE}"
                )
                self.log(f"memory: etlworks-agent load 2 at {size} rows")
                self.memory.append(("2 api", size, agent.run_flow("2 api", "api_pg", size)))
                self.pg.run(f"drop table if exists {table}")
            finally:
                api.stop()
            if size != self.rows:
                shutil.rmtree(m_csv_dir, ignore_errors=True)
                m_ndjson.unlink(missing_ok=True)

    def run(self) -> int:
        self.log(f"work dir {self.work}, database {self.pg.database}")
        self.pg.create()
        try:
            csv_dir = self.work / "csv"
            csv_dir.mkdir()
            self.log(f"generating {self.rows} CSV rows and {self.rows} API records")
            t0 = time.perf_counter()
            generate_orders_csv(csv_dir / "orders.csv", self.rows)
            ndjson, api_csv = self.work / "records.ndjson", self.work / "records.csv"
            generate_api_records(ndjson, api_csv, self.rows)
            self.log(f"generated in {time.perf_counter() - t0:.1f} s")
            loads = set(self.args.loads.split(","))
            if "csv" in loads or "pg" in loads:
                if "csv" in loads:
                    self.load_csv(csv_dir)
                else:  # load 3 needs the source table that load 1's \copy makes
                    self.copy_in("1 csv", "src_orders", ORDERS_COLUMNS, csv_dir / "orders.csv", self.rows)
            if "api" in loads:
                self.load_api(ndjson, api_csv)
            if "pg" in loads:
                self.load_pg()
            sizes = [int(s) for s in self.args.memory_rows.split()] if self.args.memory_rows else []
            if sizes:
                self.memory_check(sizes, csv_dir, ndjson)
        finally:
            if self.args.keep:
                self.log(f"kept {self.work} and database {self.pg.database}")
            else:
                try:
                    self.pg.drop()
                finally:
                    shutil.rmtree(self.work, ignore_errors=True)
        self.report()
        return 1 if any(r.error and r.tool == "etlworks-agent" for r in self.all_results()) else 0

    def all_results(self) -> list[Result]:
        return self.results + [r for _, _, r in self.memory]

    # -- report ----------------------------------------------------------------------------

    def report(self) -> None:
        print(f"\netlworks-agent benchmark: {self.rows:,} rows per load, "
              f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}\n")  # fmt: skip
        header = ["load", "tool", "rows", "seconds", "rows/s", "% of \\copy", "x dlt", "peak RSS", "note"]
        table = []
        by_load: dict[str, dict[str, Result]] = {}
        for r in self.results:
            by_load.setdefault(r.load, {})[r.tool] = r
        for r in self.results:
            ref = by_load[r.load].get("psql \\copy")
            dlt = by_load[r.load].get("dlt")
            pct = f"{100 * r.rate / ref.rate:.0f}%" if r.rate and ref and ref.rate else "-"
            times = f"{r.rate / dlt.rate:.1f}x" if r.rate and dlt and dlt.rate and r.tool != "dlt" else "-"
            note = _note(r)
            table.append([
                r.load, r.tool, f"{r.rows:,}" if r.rows is not None else "-",
                f"{r.seconds:.2f}" if r.seconds is not None else "-",
                f"{r.rate:,.0f}" if r.rate else "-", pct, times, _mib(r.peak_rss_kb), note,
            ])  # fmt: skip
        _print_table(header, table)
        if self.memory:
            print("\nPeak RSS of etlworks-agent by rows (flat memory check):\n")
            rows = [[load, f"{size:,}", f"{r.seconds:.2f}" if r.seconds else "-",
                     f"{r.rate:,.0f}" if r.rate else "-", _mib(r.peak_rss_kb),
                     _note(r) if r.error else ""] for load, size, r in self.memory]  # fmt: skip
            _print_table(["load", "rows", "seconds", "rows/s", "peak RSS", "note"], rows)
        if self.args.show_logs:
            for r in self.results:
                if "logs" in r.extra:
                    print(f"\n--- logs of our {r.load} run ---\n{r.extra['logs'].rstrip()}")
        if self.args.json_out:
            Path(self.args.json_out).write_text(json.dumps(
                [{k: v for k, v in vars(r).items() if k != "extra"} | {"rate": r.rate,
                  "engine_ms": r.extra.get("engine_ms")} for r in self.results]
                + [{"memory_rows": size, "load": load, "peak_rss_kb": r.peak_rss_kb,
                    "seconds": r.seconds, "error": r.error} for load, size, r in self.memory],
                indent=2))  # fmt: skip


def _sqlite_count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f'select count(*) from "{table}"').fetchone()[0])


def _note(r: Result) -> str:
    """The note column: the error of a failed or unmeasured row, else the row's note."""
    if not r.error:
        return r.note
    if r.error.startswith("skipped"):
        return f"not measured: {r.error}"
    return f"FAILED: {r.error}"


def _mib(kb: int | None) -> str:
    return f"{kb / 1024:.0f} MiB" if kb else "-"


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    numeric = {"rows", "seconds", "rows/s", "% of \\copy", "x dlt", "peak RSS"}

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if h in numeric else str(c).ljust(w)
            for c, w, h in zip(cells, widths, header)
        ).rstrip()

    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(fmt(row))


def main() -> int:
    parser = argparse.ArgumentParser(description="etlworks-agent throughput benchmark")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per load")
    parser.add_argument("--memory-rows", default="1000000 5000000",
                        help="row counts for the flat-memory check (space-separated; empty: skip)")
    parser.add_argument("--loads", default="csv,api,pg", help="which loads: csv,api,pg")
    parser.add_argument("--binary", type=Path, default=REPO / "target/release/etlworks-agent")
    parser.add_argument("--api-binary", type=Path, default=REPO / "target/release/bench-api")
    parser.add_argument("--python", default=str(REPO / ".venv/bin/python"), help="Python with dlt")
    parser.add_argument("--pg-host", default=os.environ.get("PGHOST", "127.0.0.1"))
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("PGPORT", "5432")))
    parser.add_argument("--pg-user", default=os.environ.get("PGUSER", "postgres"))
    parser.add_argument("--pg-admin-db", default="test", help="database to connect to for create/drop database")
    parser.add_argument("--skip-dlt", action="store_true", help="do not run the dlt loads")
    parser.add_argument("--show-logs", action="store_true", help="print our runs' logs after the table")
    parser.add_argument("--json-out", help="also write the results as JSON to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work dir and database")
    args = parser.parse_args()
    for path in (args.binary, args.api_binary):
        if not path.exists():
            parser.error(f"{path} is missing: build it (benches/run.sh does)")
    return Bench(args).run()


if __name__ == "__main__":
    sys.exit(main())
