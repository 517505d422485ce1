"""Schema fuzzing of every operation in ``/docs/openapi.json`` with schemathesis (CI-optional).

    uv run --group bench python -m loadtest.fuzz                       # own server, 20 examples
    uv run --group bench python -m loadtest.fuzz --examples 100 --url http://host:8000

Each operation gets schema-valid and schema-violating requests (schemathesis' positive and
negative generation), sent with the admin key (it passes every role check, so every handler
is reached). Operations that read a JSON body the schema does not describe (they decode it
themselves) also get arbitrary JSON bodies, nested up to thousands of levels. Prints the
requests sent, the 5xx answers and the distinct failures (operation,
status, error code), and exits 1 if any request answered 5xx or broke the connection.
Without ``--url`` it starts ``adtier serve`` on embedded stores in a temporary data dir.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import schemathesis
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from loadtest.run import start_server, stop_server


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.server_errors = 0
        self.failures: Counter[tuple[str, str, str]] = Counter()
        self.examples: dict[tuple[str, str, str], str] = {}
        self.skipped: list[str] = []

    def record(self, label: str, status: str, code: str, example: str) -> None:
        key = (label, status, code)
        self.failures[key] += 1
        self.examples.setdefault(key, example)


def _error_code(response) -> str:
    try:
        return str(response.json().get("error", ""))
    except Exception:  # noqa: BLE001 - a 5xx body need not be JSON
        return response.text[:60]


def fuzz_operation(operation, base_url: str, headers: dict[str, str], examples: int,
                   tally: Tally) -> None:
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(operation.as_strategy(generation_mode=mode))
        def run(case) -> None:
            tally.requests += 1
            try:
                response = case.call(base_url=base_url, headers=headers, timeout=30)
            except Exception as err:  # noqa: BLE001 - a dropped connection is a failure too
                tally.record(operation.label, "no answer", type(err).__name__, repr(err)[:200])
                return
            if response.status_code >= 500:
                tally.server_errors += 1
                tally.record(operation.label, str(response.status_code), _error_code(response),
                             f"{case.method} {case.formatted_path} request id "
                             f"{response.headers.get('x-request-id', '?')}")

        try:
            run()
        except Unsatisfiable:  # e.g. no parameter to violate: nothing to send in this mode
            tally.skipped.append(f"{operation.label} ({mode.value})")


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**80, 2**80) | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=30,
)
_bodies = st.one_of(
    _json.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 20_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.binary(max_size=2000),
)


def fuzz_schemaless_body(operation, base_url: str, headers: dict[str, str], examples: int,
                         tally: Tally) -> None:
    """Arbitrary bodies for an operation whose body is not in the schema."""
    path = re.sub(r"\{[^}]+\}", "x", operation.path)

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(_bodies)
    def run(body: bytes) -> None:
        tally.requests += 1
        try:
            response = httpx.request(operation.method.upper(), base_url + path, content=body,
                                     headers={**headers, "Content-Type": "application/json"},
                                     timeout=30)
        except httpx.HTTPError as err:
            tally.record(operation.label, "no answer", type(err).__name__, repr(err)[:200])
            return
        if response.status_code >= 500:
            tally.server_errors += 1
            tally.record(operation.label, str(response.status_code), _error_code(response),
                         f"body {body[:60]!r} request id {response.headers.get('x-request-id')}")

    run()


def fuzz(base_url: str, admin_key: str, examples: int) -> Tally:
    schema = schemathesis.openapi.from_url(f"{base_url}/docs/openapi.json")
    headers = {"Authorization": f"Bearer {admin_key}"}
    tally = Tally()
    for result in schema.get_all_operations():
        operation = result.ok()
        started = time.monotonic()
        fuzz_operation(operation, base_url, headers, examples, tally)
        declared = operation.definition.raw.get("requestBody")
        if operation.method.upper() in ("POST", "PUT") and not declared:
            fuzz_schemaless_body(operation, base_url, headers, examples, tally)
        print(f"  {operation.label:<60} {time.monotonic() - started:6.1f} s", flush=True)
    return tally


def report(tally: Tally) -> None:
    print(f"\nrequests: {tally.requests}")
    print(f"5xx answers: {tally.server_errors}")
    print(f"nothing to generate (skipped): {len(tally.skipped)}: {', '.join(tally.skipped)}")
    print(f"distinct failures: {len(tally.failures)}")
    for (label, status, code), n in sorted(tally.failures.items()):
        print(f"  {n:5d} x {status:<13} {code:<24} {label}")
        print(f"          e.g. {tally.examples[(label, status, code)]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running adtier (needs ADTIER_ADMIN_KEY)")
    parser.add_argument("--examples", type=int, default=20, help="per operation and mode")
    args = parser.parse_args(argv)
    if args.url:
        tally = fuzz(args.url.rstrip("/"), os.environ["ADTIER_ADMIN_KEY"], args.examples)
    else:
        admin_key = "adt_fuzz_" + secrets.token_hex(16)
        with tempfile.TemporaryDirectory(prefix="adtier-fuzz-") as tmp:
            proc, url = start_server(Path(tmp) / "data", admin_key)
            try:
                tally = fuzz(url, admin_key, args.examples)
            finally:
                stop_server(proc)
            errors = [line for line in (Path(tmp) / "server.log").read_text().splitlines()
                      if '"internal_error"' in line]
            print(f"server log: {len(errors)} internal_error lines" +
                  "".join(f"\n  {line[:300]}" for line in errors[:10]))
    report(tally)
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.exit(main())
