"""Audit seals on the command line: GOVKERNEL_AUDIT_KEY seals what the CLI writes, `audit
verify` checks the seals, `audit seal` seals what was written before the key (or under the
key it replaces), and the key is never shown."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from surrealdb import RecordID

from adapters.memory import MemoryStore
from adapters.surrealdb import SurrealConfig, SurrealStore
from composition.container import Overrides, build_app
from composition.settings import ConfigurationError, Settings
from domain.model.errors import InvalidInput
from domain.model.seal import AuditKey
from ports.records import audit_key
from tests.composition.test_anchors import rewrite
from tests.composition.test_cli import FRED, IMF, Cli, _die_holding
from tests.composition.test_cli import fresh as fresh  # a fixture
from tests.workflow.harness import request

KEY = "k3y-0123456789abcdef-" + "7" * 40
NEW_KEY = "n3w-0123456789abcdef-" + "8" * 40
KEYED = {"GOVKERNEL_AUDIT_KEY": KEY}


def no_key_shown(gk: Cli) -> None:
    assert gk.last is not None
    for secret in (KEY, NEW_KEY, "7777777777", "8888888888"):
        assert secret not in gk.last.stdout + gk.last.stderr


def test_a_trail_rewritten_with_fresh_hashes_is_caught_by_its_seal(fresh: Cli) -> None:
    xid = fresh.json("run", "knowledge-publication", str(FRED), env=KEYED)["execution_id"]
    assert fresh.json("audit", "verify", env=KEYED)["ok"]
    # The text form says the seals were checked, not only the chains (found by a README
    # walk: it read as a check without the key).
    key_id = AuditKey.from_text(KEY).key_id
    assert f"every seal holds (key id {key_id})" in fresh("audit", "verify", env=KEYED).stdout
    assert "every seal holds" not in fresh("audit", "verify").stdout
    rewrite(fresh.url, xid, 3, "nothing to see")

    alone = fresh.json("audit", "verify")  # the chain alone cannot tell...
    assert alone["ok"] and alone["seals_checked"] is False
    assert "1 execution here carries audit seals, not checked: no audit key" in fresh.stderr
    caught = fresh.json("audit", "verify", env=KEYED, code=1)
    assert caught["seals_checked"] is True and "seals" not in fresh.stderr
    [report] = caught["reports"]
    assert "does not match its audit head" in report["problem"]
    assert report["seal"] is True
    shown = fresh("audit", "verify", xid, env=KEYED, code=1).stdout
    assert "SEAL: its seal does not match" in shown and "first bad entry" not in shown
    assert f"audit seal of {xid} does not hold" in fresh.stderr
    assert "rewritten by someone without the audit key" in fresh.stderr
    no_key_shown(fresh)
    # Nor is its seal replaced.
    fresh("audit", "seal", env=KEYED, code=1)
    assert f"{xid} was left unsealed" in fresh.stderr
    no_key_shown(fresh)


def test_executions_written_before_the_key_are_sealed_by_audit_seal(fresh: Cli) -> None:
    xid = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    [report] = fresh.json("audit", "verify", env=KEYED, code=1)["reports"]
    assert report["problem"].startswith("not sealed")

    left = fresh.json("audit", "seal", env=KEYED, code=1)  # it may be a seal removed
    assert (left["sealed"], left["unsealed"]) == (0, 1)
    # Each outcome as the counts are keyed ("left unsealed" before: found by a JSON
    # consumer's pass).
    assert [r["outcome"] for r in left["results"]] == ["unsealed"]
    assert "`audit seal --unsealed` seals it as it stands" in fresh.stderr
    [row] = [
        line
        for line in fresh("audit", "seal", env=KEYED, code=1).stdout.splitlines()
        if xid in line
    ]
    assert re.fullmatch(rf"{xid} +left unsealed +written without the audit key.*", row), row
    done = fresh.json("audit", "seal", "--unsealed", env=KEYED)
    assert (done["sealed"], done["already"], done["refused"]) == (1, 0, 0)
    assert done["results"] == [{"execution_id": xid, "outcome": "sealed", "problem": None}]
    assert fresh.json("audit", "verify", env=KEYED)["ok"]
    assert "already sealed 1," in fresh("audit", "seal", xid, env=KEYED).stdout
    again = fresh.json("audit", "seal", xid, env=KEYED)
    assert again["already"] == 1 and again["results"][0]["outcome"] == "already"
    # A run under the key is sealed as it is written.
    fresh.json("run", "knowledge-publication", str(IMF), env=KEYED)
    assert fresh.json("audit", "verify", env=KEYED)["executions"] == 2
    no_key_shown(fresh)


def test_a_keyed_worker_refusing_an_execution_from_before_the_key_says_what_seals_it(
    fresh: Cli,
) -> None:
    """It said only "not sealed" (found by an upgrade pass)."""
    run = ("run", "knowledge-publication", str(FRED), "--tier", "Tier1")
    xid = fresh.json(*run)["execution_id"]
    bob = KEYED | {"GOVKERNEL_ACTOR": "bob"}
    fresh("approve", xid, "--role", "reviewer", env=bob, code=1)
    assert "not sealed: written without the audit key" in fresh.stderr
    assert "then `govkernel audit seal EXECUTION --unsealed` seals it as it stands" in fresh.stderr
    assert fresh.json("audit", "seal", xid, "--unsealed", env=KEYED)["sealed"] == 1
    fresh("approve", xid, "--role", "reviewer", env=bob)  # acted on once sealed


def test_a_command_without_the_key_that_unseals_an_execution_says_so(fresh: Cli) -> None:
    """A cron job missing the key approved a sealed execution, silently leaving it one that
    keyed workers refuse (found by a re-test)."""
    waiting = fresh.json("run", "knowledge-publication", str(FRED), "--tier", "Tier1", env=KEYED)
    xid = waiting["execution_id"]
    assert waiting["state"] == "awaiting_approval" and "note:" not in fresh.stderr
    bob = {"GOVKERNEL_ACTOR": "bob"}
    assert fresh.json("approve", xid, "--role", "reviewer", env=bob)["state"] == "succeeded"
    assert f"note: execution {xid} was sealed, and acted on without the audit key" in fresh.stderr
    assert f" audit seal {xid} --unsealed` is run with the key" in fresh.stderr
    fresh("audit", "verify", xid, env=KEYED, code=1)  # as the note says
    fresh("audit", "seal", xid, "--unsealed", env=KEYED)
    assert fresh.json("audit", "verify", xid, env=KEYED)["ok"]
    # With the key, no note: the seal moves on with the execution.
    again = fresh.json("run", "knowledge-publication", str(IMF), "--tier", "Tier1", env=KEYED)
    fresh("approve", again["execution_id"], "--role", "reviewer", env=KEYED | bob)
    assert "note:" not in fresh.stderr
    no_key_shown(fresh)


def test_a_new_key_takes_over_the_seals_the_key_it_replaces_made(fresh: Cli) -> None:
    fresh.json("run", "knowledge-publication", str(FRED), env=KEYED)
    rotated = {"GOVKERNEL_AUDIT_KEY": NEW_KEY}
    [report] = fresh.json("audit", "verify", env=rotated, code=1)["reports"]
    assert "sealed with another audit key" in report["problem"]
    fresh("audit", "seal", env=rotated, code=1)  # not on its own word
    moved = fresh.json("audit", "seal", env=rotated | {"GOVKERNEL_AUDIT_PREVIOUS_KEY": KEY})
    assert (moved["moved"], moved["sealed"]) == (1, 0)
    assert "remove GOVKERNEL_AUDIT_PREVIOUS_KEY" in fresh.stderr
    assert "already sealed 1" in fresh("audit", "seal", env=rotated).stdout
    assert "remove GOVKERNEL_AUDIT_PREVIOUS_KEY" not in fresh.stderr
    assert fresh.json("audit", "verify", env=rotated)["ok"]
    fresh("audit", "verify", env=KEYED, code=1)
    no_key_shown(fresh)


def test_a_key_an_older_govkernel_took_can_still_be_moved_off(fresh: Cli) -> None:
    """Keys of 32 bytes with fewer than 8 values, or white space at their ends, were taken
    before keys were checked: refused since, even as the previous key, they left the
    executions they sealed refused by every keyed worker for good (an upgrade pass, h156).
    Named as the previous key, `audit seal` moves their seals to the new key."""
    from datetime import UTC, datetime

    from ports.clock import FixedClock
    from tests.workflow.harness import TENANT, WORKFLOW, orchestrator

    weak = "abcd" * 8 + " "
    with SurrealStore(SurrealConfig(fresh.url, audit_key=AuditKey.earlier(weak))) as store:
        clock = FixedClock(datetime.now(UTC))
        orchestrator(store.unit_of_work, clock).start(WORKFLOW, request("pub-weak"))
    tenant = {"GOVKERNEL_TENANT": TENANT}
    fresh("executions", "list", env=tenant | {"GOVKERNEL_AUDIT_KEY": weak}, code=2)
    assert "at least 8 different values" in fresh.stderr  # never to seal with
    rotated = tenant | {"GOVKERNEL_AUDIT_KEY": NEW_KEY}
    [report] = fresh.json("audit", "verify", env=rotated, code=1)["reports"]
    assert "sealed with another audit key" in report["problem"]
    moved = fresh.json("audit", "seal", env=rotated | {"GOVKERNEL_AUDIT_PREVIOUS_KEY": weak})
    assert (moved["moved"], moved["sealed"]) == (1, 0)
    assert fresh.json("audit", "verify", env=rotated)["ok"]
    assert "abcdabcd" not in fresh.stderr  # the key is never shown
    with pytest.raises(InvalidInput, match="at least 32 bytes"):
        AuditKey.earlier("abcd" * 7)


def test_keys_that_cannot_be_used_are_refused_without_being_shown(
    fresh: Cli, tmp_path: Path
) -> None:
    fresh.json("run", "knowledge-publication", str(FRED))
    fresh("audit", "seal", code=2)
    assert "no audit key to seal with: set GOVKERNEL_AUDIT_KEY" in fresh.stderr
    short = "7" * 31
    fresh("executions", "list", env={"GOVKERNEL_AUDIT_KEY": short}, code=2)
    assert "GOVKERNEL_AUDIT_KEY" in fresh.stderr and "at least 32 bytes" in fresh.stderr
    assert short not in fresh.stderr
    fresh("audit", "seal", env=KEYED | {"GOVKERNEL_AUDIT_PREVIOUS_KEY": KEY}, code=2)
    assert "GOVKERNEL_AUDIT_PREVIOUS_KEY (previous_audit_key): is the audit key itself" in (
        fresh.stderr
    )
    fresh("audit", "seal", env={"GOVKERNEL_AUDIT_PREVIOUS_KEY": KEY}, code=2)
    assert "set the audit key (GOVKERNEL_AUDIT_KEY) too" in fresh.stderr
    no_key_shown(fresh)
    # The settings file takes it too, and never shows it either.
    config = tmp_path / "govkernel.toml"
    config.write_text(f'audit_key = "{KEY}"\n')
    sealed = fresh("--config", str(config), "--debug", "audit", "seal", "--unsealed").stdout
    assert "sealed 1," in sealed
    no_key_shown(fresh)


def test_a_store_given_in_code_must_hold_the_key_the_settings_name() -> None:
    settings = Settings(store_url="memory://", audit_key=KEY)
    for store in (MemoryStore(), MemoryStore(audit_key=AuditKey.from_text(NEW_KEY))):
        with (
            pytest.raises(ConfigurationError, match="give it the same key") as refused,
            build_app(settings, Overrides(store=store)),
        ):
            pass
        assert KEY not in str(refused.value)
    same = MemoryStore(audit_key=AuditKey.from_text(KEY))
    with build_app(settings, Overrides(store=same)) as app:
        x = app.orchestrator.start("knowledge_publication", request("pub-in-code"))
        assert same.tables["execution"][x.id]["seal"].startswith(AuditKey.from_text(KEY).key_id)


def test_a_seal_of_the_previous_key_is_said_as_one_mid_rotation(fresh: Cli) -> None:
    """Verified with the new key beside the old, it said only "another audit key", and
    `executions show` said the chain was broken (found by a configuration pass)."""
    xid = fresh.json("run", "knowledge-publication", str(FRED), env=KEYED)["execution_id"]
    rotating = {"GOVKERNEL_AUDIT_KEY": NEW_KEY, "GOVKERNEL_AUDIT_PREVIOUS_KEY": KEY}
    [report] = fresh.json("audit", "verify", env=rotating, code=1)["reports"]
    assert report["seal"] and report["problem"].endswith(
        ": the previous key's, which `audit seal` moves to this one"
    )
    [report] = fresh.json("audit", "verify", env={"GOVKERNEL_AUDIT_KEY": NEW_KEY}, code=1)[
        "reports"
    ]
    assert "previous key" not in report["problem"]  # a key it was not told of
    shown = fresh("executions", "show", xid, env=rotating, code=1).stdout
    assert "chain intact, SEAL: sealed with another audit key" in shown
    assert "the previous key's, which `audit seal` moves to this one" in shown
    assert "BROKEN" not in shown and "broken" not in fresh.stderr
    assert f"error: audit seal of {xid} does not hold: sealed with another" in fresh.stderr
    fresh("executions", "show", xid, "--json", env=rotating, code=1)
    assert f"error: audit seal of {xid} does not hold" in fresh.stderr
    no_key_shown(fresh)


def test_a_trail_left_of_an_execution_deleted_is_named_not_sealed_over(fresh: Cli) -> None:
    """h173: `audit seal --unsealed` said "refused 0" and exited 0 over it, where `audit
    verify` and `audit anchor` fail naming it."""
    kept = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    gone = fresh.json("run", "knowledge-publication", str(IMF))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows("DELETE $r", {"r": RecordID("execution", gone)})
    done = fresh.json("audit", "seal", "--unsealed", env=KEYED, code=1)
    outcomes = {r["execution_id"]: (r["outcome"], r["problem"]) for r in done["results"]}
    assert outcomes[kept] == ("sealed", None) and outcomes[gone][0] == "refused"
    assert "the execution record is gone" in outcomes[gone][1]
    assert f"{gone} was left unsealed: the execution record is gone" in fresh.stderr
    beta = fresh.json("audit", "seal", "--unsealed", env=KEYED | {"GOVKERNEL_TENANT": "beta"})
    assert beta["results"] == []  # not another tenant's to name


def test_a_seal_run_stopped_by_a_crash_is_said_as_one_by_recover(fresh: Cli) -> None:
    """h174: the check after the crash named every execution the run had not reached as a
    seal that does not hold, which reads as forgery: with only seals missing, it says so,
    and what finishes the run."""
    sealed = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    fresh.json("run", "knowledge-publication", str(IMF))
    fresh.json("audit", "seal", sealed, "--unsealed", env=KEYED)  # as far as the run came
    _die_holding(fresh.url)
    cut = fresh("recover", env=KEYED, code=1).stderr
    assert "1 audit seal(s) that do not hold after the crash" in cut
    assert "if the crash stopped an `audit seal --unsealed`" in cut
    assert f"`govkernel --store {fresh.url} audit seal --unsealed` seals the rest" in cut
    fresh.json("audit", "seal", "--unsealed", env=KEYED)
    assert "every audit chain intact" in fresh("recover", env=KEYED).stdout
    rewrite(fresh.url, sealed, 3, "nothing to see")  # a seal that no longer holds: not that
    _die_holding(fresh.url)
    forged = fresh("recover", env=KEYED, code=1).stderr
    assert "1 audit seal(s) that do not hold" in forged and "stopped" not in forged
    no_key_shown(fresh)


def test_audit_seal_covers_this_tenant_unless_asked_for_every_tenant(fresh: Cli) -> None:
    """It ran over every tenant's executions: one tenant's operator was shown another's
    execution ids, approvers and broken trails, and failed over them (h148)."""
    ours = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    beta = {"GOVKERNEL_TENANT": "beta"}
    theirs = fresh.json("run", "knowledge-publication", str(IMF), env=beta)["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:  # an entry of theirs deleted
        store.select_rows("DELETE $r", {"r": RecordID("audit", audit_key(theirs, 2))})

    sealed = fresh.json("audit", "seal", "--unsealed", env=KEYED)
    assert [r["execution_id"] for r in sealed["results"]] == [ours] and sealed["sealed"] == 1
    assert fresh.last is not None and theirs not in fresh.last.stdout + fresh.stderr
    fresh("audit", "seal", theirs, env=KEYED, code=2)  # nor by id, as any other command
    assert fresh.stderr == f"error: no execution '{theirs}' in tenant 'default'\n"

    every = fresh.json("audit", "seal", "--all-tenants", "--unsealed", env=KEYED, code=1)
    outcomes = {r["execution_id"]: r["outcome"] for r in every["results"]}
    assert outcomes == {ours: "already", theirs: "refused"}
    fresh("audit", "seal", ours, "--all-tenants", env=KEYED, code=2)
    assert "not both" in fresh.stderr
    # Nor one of theirs that cannot be read, asked for by id (h149).
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "DEFINE FIELD OVERWRITE state ON TABLE execution TYPE any;"
            " UPDATE $r SET state = 'bogus_state' RETURN NONE;",
            {"r": RecordID("execution", theirs)},
        )
    fresh("audit", "seal", theirs, env=KEYED, code=2)
    assert fresh.stderr == f"error: no execution '{theirs}' in tenant 'default'\n"
    no_key_shown(fresh)
