"""The Kafka engine peer's SQL (bench/peer_kafka_engine.py) against the pipeline's Python, body by body, in chDB.

The processors bench checks that the peer stores exactly what the worker stores on the bench's input; these check
the SQL's parts on the bodies that input seldom or never has: every malformed kind of the simulator, counts beyond
64 bits, nulls, floats, versions and Go versions with spaces and zeros, bytes that are not UTF-8.
"""

from __future__ import annotations

import random
from typing import Any

import chdb
import orjson
import pytest

from bench.peer_kafka_engine import python_replace_decode, reason_sql
from processors.snapshot import major_minor
from processors.validate import Rejection, validate
from producers.simulator import generate
from producers.simulator.corruption import MALFORMED_KINDS_CLI, MALFORMED_KINDS_IS, corrupt
from tests.samples import SAMPLES

pytestmark = pytest.mark.integration


LIMIT = 10**9
IS_UID = "A" * 85 + "Q=="


def _is(**changes: Any) -> dict[str, Any]:
    body = orjson.loads(SAMPLES["is-3.32.json"])
    body["uid"] = IS_UID
    body.update(changes)
    return body


def _counts(**counts: Any) -> dict[str, Any]:
    body = _is()
    ec = body["entities_count"]
    for path, value in counts.items():
        node = ec
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return body


def _raw(text: str) -> bytes:
    return text.encode()


EDGE_BODIES: list[bytes] = [
    orjson.dumps(_counts(gateways__total=2**64 - 1)),  # the largest count: implausible, not out of range
    _raw(orjson.dumps(_is()).decode().replace('"total":3', '"total":18446744073709551616', 1)),  # 2**64
    _raw(orjson.dumps(_is()).decode().replace('"total":3', '"total":-9223372036854775809', 1)),
    _raw(orjson.dumps(_is()).decode().replace('"total":3', '"total":"18446744073709551616"', 1)),  # a string
    orjson.dumps(_counts(gateways__total=None)),
    orjson.dumps(_counts(accounts__users__total=None)),  # may be null
    orjson.dumps(_counts(accounts__users__total=5)),
    orjson.dumps(_counts(accounts__users__total=2 * LIMIT)),
    orjson.dumps(_counts(gateways__total=True)),
    orjson.dumps(_counts(gateways__total=3.0)),
    orjson.dumps(_counts(gateways__total=-1.5)),
    orjson.dumps(_counts(gateways__total=[1])),
    orjson.dumps(_counts(gateways__total={})),
    orjson.dumps(_counts(gateways=None)),
    orjson.dumps(_counts(gateways=5)),
    orjson.dumps(_counts(gateways__gateways_by_frequency_plan_id={"EU": "1"})),
    orjson.dumps(_counts(gateways__gateways_by_frequency_plan_id={"EU": 1.5})),
    orjson.dumps(_counts(gateways__gateways_by_frequency_plan_id={"EU": -1})),
    orjson.dumps(_counts(gateways__gateways_by_frequency_plan_id={"EU": 2 * LIMIT})),
    orjson.dumps(_counts(gateways__gateways_by_frequency_plan_id={"EU": None})),
    orjson.dumps(_counts(gateways__gateways_by_frequency_plan_id=[])),
    orjson.dumps(_counts(end_devices__activate_end_devices=None)),
    orjson.dumps(_counts(gateways__total="3", applications__total=-1)),  # two problems: the first in precedence
    orjson.dumps(_counts(applications__total=-1, gateways__total=1.5)),
    orjson.dumps(_is(uid=None)),
    orjson.dumps(_is(uid=5)),
    orjson.dumps(_is(os=None)),
    orjson.dumps(_is(os="linux")),
    orjson.dumps(_is(os={"operating_system": None})),
    orjson.dumps(_is(os={"binary_version": 3})),
    orjson.dumps(_is(os={})),
    orjson.dumps(_is(cli="x")),
    orjson.dumps(_is(cli=[])),
    orjson.dumps(_is(cli=None, entities_count=None)),
    orjson.dumps(_is(entities_count=[])),
    orjson.dumps(_is(uid="A" * 85 + "B==")),
    orjson.dumps(_is(uid=IS_UID + "\n")),
    orjson.dumps(_is(extra={"anything": [1, "x", None]})),
    orjson.dumps({"uid": "0f8fad5b-d9cb-469f-a165-70867728950e", "cli": {}, "entities_count": None}),
    orjson.dumps({"uid": "0f8fad5b-d9cb-469f-a165-70867728950e", "cli": {"commands": []}}),
    orjson.dumps({"uid": "0f8fad5b-d9cb-469f-a165-70867728950E", "cli": {}, "os": None}),
    orjson.dumps({"uid": "0f8fad5b-d9cb-469f-a165-70867728950", "cli": {}}),
    orjson.dumps({"uid": IS_UID, "cli": {}, "entities_count": {}}),
    orjson.dumps({"cli": {}}),
    b"",
    b"{",
    b"[]",
    b'"x"',
    b"null",
    b'{"uid": "x", "cli": {}} trailing',
    b"\xff\xfe{}",
    b" {} ",
]


def _bodies() -> list[bytes]:
    rng = random.Random(7)
    sim = generate(60, 20, 3, seed=3, end_day="2025-01-31")
    bodies = [d.body for d in sim.deliveries] + list(SAMPLES.values()) + EDGE_BODIES
    for obj in (_is(), {"uid": "0f8fad5b-d9cb-469f-a165-70867728950e", "os": _is()["os"], "cli": {}}):
        kinds = MALFORMED_KINDS_IS if "entities_count" in obj else MALFORMED_KINDS_CLI
        bodies += [corrupt(obj, kind, rng) for kind in kinds for _ in range(6)]
    return bodies


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Any:
    conn = chdb.connect(":memory:")
    conn.staging = tmp_path_factory.mktemp("bodies") / "bodies.jsonl"
    yield conn
    conn.close()


def _column(session: Any, expression: str, values: list[bytes]) -> list[str]:
    """`expression` of each value (as `b`), in order, as TabSeparated text (escaped as ClickHouse escapes it)."""
    session.staging.write_bytes(b"\n".join(orjson.dumps({"n": i, "b": v.hex()}) for i, v in enumerate(values)))
    session.query("DROP TABLE IF EXISTS bodies")
    session.query("CREATE TABLE bodies (n UInt32, b String) ENGINE = Memory")
    session.query(
        f"INSERT INTO bodies SELECT n, unhex(b) FROM file('{session.staging}', JSONEachRow, 'n UInt32, b String')"
    )
    out = session.query(f"SELECT {expression} FROM bodies ORDER BY n FORMAT TabSeparated").bytes()
    return out.decode("utf-8").split("\n")[: len(values)]


def test_sql_validation_gives_the_pipelines_reason_for_every_body(session: Any) -> None:
    bodies = _bodies()
    got = _column(session, reason_sql(LIMIT), bodies)
    expected = [r.reason.value if isinstance(r := validate(b, LIMIT), Rejection) else "" for b in bodies]
    wrong = [(b[:160], e, g) for b, e, g in zip(bodies, expected, got) if e != g]
    assert not wrong, f"{len(wrong)} of {len(bodies)} bodies judged otherwise (body, pipeline, SQL): {wrong[:8]}"
    assert len({e for e in expected}) >= 11, "the bodies should cover every reason the pipeline gives"


def test_sql_decodes_bytes_as_python_replaces_what_is_not_utf8(session: Any) -> None:
    rng = random.Random(11)
    pool = [b"a", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80", b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80"]
    pool += [bytes([rng.randrange(256)]) for _ in range(40)]
    values = [b"".join(rng.choice(pool) for _ in range(rng.randrange(1, 12))) for _ in range(400)]
    values += [b"\xff\xfe{}", b"ok", b"\xf0\x9f\x98", b"\xe0\x80\x80", b"\xf4\x90\x80\x80"]
    got = _column(session, python_replace_decode("b"), values)
    expected = [
        v.decode("utf-8", "replace").replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n") for v in values
    ]
    wrong = [(v, e, g) for v, e, g in zip(values, expected, got) if e != g]
    assert not wrong, f"{len(wrong)} of {len(values)} decoded otherwise (bytes, Python, SQL): {wrong[:8]}"


@pytest.mark.parametrize(
    "binary_version", ["3.32.1", "v3.32.1", " \t3.032.1-dev", "03.010", "3", "x3.2", "", "3.32 (abc)", "10.0.0"]
)
def test_sql_major_minor_is_the_pipelines(session: Any, binary_version: str) -> None:
    from bench.peer_kafka_engine import MAJOR_MINOR

    (got,) = _column(session, MAJOR_MINOR.format(version="toString(b)"), [binary_version.encode()])
    assert got == major_minor(binary_version)


#: Where the SQL cannot follow pydantic (bench/peer_kafka_engine.py says which): (body, pipeline's reason, SQL's).
KNOWN_DIVERGENCES = [
    (b'{"uid":"0f8fad5b-d9cb-469f-a165-70867728950e","cli":{},"n":NaN}', "", "not_json"),  # NaN where no field is
    (b'{"uid":5,"uid":"0f8fad5b-d9cb-469f-a165-70867728950e","cli":{}}', "", "wrong_type"),  # a key given twice
]


def test_the_divergences_are_the_documented_ones(session: Any) -> None:
    bodies = [b for b, _pipeline, _sql in KNOWN_DIVERGENCES]
    got = _column(session, reason_sql(LIMIT), bodies)
    expected = [r.reason.value if isinstance(r := validate(b, LIMIT), Rejection) else "" for b in bodies]
    assert list(zip(expected, got)) == [(p, q) for _b, p, q in KNOWN_DIVERGENCES]
