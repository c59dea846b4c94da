"""detectors/ stays pure: no I/O library may be imported from it."""

from __future__ import annotations

import ast
from pathlib import Path

import detectors

FORBIDDEN = {"asyncio", "faust", "aiokafka", "confluent_kafka", "kafka", "redis", "prometheus_client",
             "socket", "requests", "streams", "subprocess"}  # fmt: skip


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_detectors_import_no_io_library() -> None:
    files = sorted(Path(detectors.__file__).parent.glob("*.py"))
    assert len(files) >= 5
    offenders = {f.name: imported_roots(f) & FORBIDDEN for f in files if imported_roots(f) & FORBIDDEN}
    assert offenders == {}


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import numpy\nfrom redis.asyncio import Redis\n")
    assert imported_roots(sample) & FORBIDDEN == {"redis"}
