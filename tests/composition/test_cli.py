"""The govkernel CLI end to end, through its real entry points, on temporary surrealkv stores.

Each call is a fresh process (about half a second), so the tests share one store where they
can and read results back through `--json`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from surrealdb import RecordID

from adapters.faults import FaultInjector, FaultPlan
from adapters.surrealdb import SurrealConfig, SurrealStore
from adapters.surrealdb import schema as surreal_schema
from composition import queries
from composition.cli import outcome
from composition.container import Overrides, build_app
from composition.documents import publication_request, read_source
from composition.settings import Settings, load_settings
from domain.model.lifecycle import ExecutionState
from domain.model.policy import APPROVAL_TTL, ImpactTier
from domain.workflows import knowledge_publication as kp
from ports.errors import CorruptRecord, InjectedFault, RecordNotFound, StorageUnavailable
from ports.records import audit_key
from ports.unit_of_work import UnitOfWorkFactory

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
IMF = EXAMPLES / "imf-global-financial-stability-note.md"
BIS = EXAMPLES / "bis-annual-economic-report-note.md"
FRED = EXAMPLES / "fred-federal-funds-rate-note.md"
SCRIPT = Path(sys.executable).with_name("govkernel")
SECRET = "pw-Never-Shown-42"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOVKERNEL_")}
    return env | {"GOVKERNEL_ACTOR": "operator"} | extra


class Cli:
    def __init__(self, store: Path, cwd: Path) -> None:
        self.url = f"surrealkv://{store}"
        self.store = store
        self.cwd = cwd
        self.last: subprocess.CompletedProcess[str] | None = None

    def __call__(
        self,
        *args: str,
        code: int = 0,
        env: dict[str, str] | None = None,
        store: bool = True,
        redirect: str = "",
        stdout: int = subprocess.PIPE,
    ) -> subprocess.CompletedProcess[str]:
        """`redirect`, as a shell gives it (`>/dev/full`, `2>&-`), replaces the capture, as
        `stdout` (a descriptor) does stdout's."""
        command = [sys.executable, "-m", "composition.cli"]
        command += ["--store", self.url] if store else []
        if redirect:
            command = ["sh", "-c", f'exec "$@" {redirect}', "sh", *command]
        done = subprocess.run(
            [*command, *args],
            env=clean_env(**(env or {})),
            cwd=self.cwd,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
        assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
        self.last = done
        return done

    def json(self, *args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
        done = self("--json", *args, code=code, env=env)
        return json.loads(done.stdout)  # stdout is exactly one JSON document

    @property
    def stderr(self) -> str:
        return self.last.stderr if self.last else ""


@pytest.fixture(scope="module")
def gk(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    base = tmp_path_factory.mktemp("cli")
    return Cli(base / "store", base)


@pytest.fixture
def fresh(tmp_path: Path) -> Cli:
    return Cli(tmp_path / "store", tmp_path)


SUMMARY_KEYS = {
    *("execution_id", "workflow", "workflow_version", "state", "risk_tier", "current_step"),
    *("step", "steps", "tenant", "environment", "requested_by", "idempotency_key"),
    *("created_at", "updated_at", "last_error"),
}
DETAIL_KEYS = SUMMARY_KEYS | {
    *("correlation_id", "metadata", "attempts", "step_outputs", "approvals", "lease_owner"),
    *("lease_expires_at", "retry_at", "cancel_requested", "audit_sequence", "audit_head"),
    *("version", "input"),
}
AUDIT_KEYS = {
    *("sequence", "from_state", "to_state", "at", "actor", "reason", "step"),
    *("correlation_id", "prev_hash", "hash"),
}
REPORT_KEYS = {
    "execution_id",
    "ok",
    "entries",
    "first_bad_sequence",
    "problem",
    "seal",
    "bad_entry",
}
EVENT_KEYS = {
    *("position", "event_id", "type", "schema_version", "tenant", "actor", "occurred_at"),
    *("correlation_id", "causation_id", "decision_ref", "classification", "integrity_hash"),
    *("intact", "payload"),
}


def test_run_prints_transitions_then_list_show_verify_and_events(gk: Cli) -> None:
    extra = []
    for n in (1, 2):
        extra.append(gk.cwd / f"fsb-{n}.md")
        extra[-1].write_text(
            f"---\nkind: fsb\nurl: https://www.fsb.org/{n}\nclassification: public\n---\n"
            f"# FSB note {n}\n\nLeverage in nonbank finance rose in year {n}.\n"
        )
    files = [str(p) for p in (IMF, BIS, FRED, *extra)]  # five: enough for a progress bar
    done = gk("run", "knowledge-publication", *files, "--title", "Five notes")
    out = done.stdout
    for line in ("#1   pending", "#2   running", "step ingest completed: 5 sources", "succeeded"):
        assert line in out
    assert done.stderr == ""  # a progress bar only for someone watching a terminal

    record = gk.json("run", "knowledge-publication", str(FRED), "--publication-id", "fred-1")
    assert record["state"] == "succeeded" and record["risk_tier"] == "Tier0"
    assert set(record) == DETAIL_KEYS | {"reused"}  # what scripts read: each key pinned
    assert record["reused"] is False
    xid = record["execution_id"]
    assert record["step_outputs"]["publish"]["capsule_id"].startswith("cap-")
    assert record["input"]["publication_id"] == "fred-1"
    assert record["input"]["policy_refs"] == ["POL-KNOWLEDGE-1"]

    listed = gk.json("executions", "list", "--limit", "2")
    assert len(listed) == 2 and listed[0]["execution_id"] == xid  # newest first
    assert set(listed[0]) == SUMMARY_KEYS
    assert xid in gk("executions", "list").stdout
    # Page by page, each from the last one listed: every execution once, newest first.
    paged = [x["execution_id"] for x in gk.json("executions", "list", "--limit", "1")]
    while page := gk.json("executions", "list", "--limit", "1", "--before", paged[-1]):
        paged += [x["execution_id"] for x in page]
    assert paged == [x["execution_id"] for x in gk.json("executions", "list")]
    hint = f"--before {xid} --limit 1 shows the next 1"
    assert hint in gk("executions", "list", "--limit", "1").stdout
    assert hint in gk("--json", "executions", "list", "--limit", "1").stderr
    listed_succeeded = gk("executions", "list", "--state", "succeeded", "--limit", "1").stdout
    assert f"--before {xid} --state succeeded --limit 1 shows the next 1" in listed_succeeded
    last = gk("executions", "list", "--before", paged[-1]).stdout
    assert f"no executions listed after {paged[-1]}" in last
    whole = gk("executions", "list", "--limit", str(len(paged)))  # exactly one full page
    assert "shows the next" not in whole.stdout + whole.stderr  # nothing is left to show
    assert (
        "no execution 'nope' in tenant 'default'\n"
        in gk("executions", "list", "--before", "nope", code=2).stderr
    )
    ours = gk.json("executions", "list", "--workflow", "knowledge_publication", "--limit", "1")
    assert [x["execution_id"] for x in ours] == [xid]
    hint = f"--before {xid} --workflow knowledge_publication --limit 1 shows the next 1"
    assert (
        hint
        in gk("executions", "list", "--workflow", "knowledge_publication", "--limit", "1").stdout
    )
    none = gk("executions", "list", "--workflow", "payout").stdout
    assert "no executions of workflow payout in tenant 'default' (no workflow of that" in none
    assert "not a workflow name" in gk("executions", "list", "--workflow", "a b", code=2).stderr

    shown = gk.json("executions", "show", xid)
    assert set(shown) == DETAIL_KEYS | {"audit", "verification"}
    assert set(shown["audit"][0]) == AUDIT_KEYS and set(shown["verification"]) == REPORT_KEYS
    assert [e["sequence"] for e in shown["audit"]] == list(range(1, 8))
    document = shown["input"]["documents"][0]  # summed up: the text may run to megabytes
    assert "content_text" not in document
    assert document["content_chars"] == len(read_source(FRED).body)
    assert shown["audit"][-1]["to_state"] == "succeeded" and shown["verification"]["ok"]
    human = gk("executions", "show", xid).stdout
    assert "audit trail (7 entries, chain intact)" in human and "SEQ" in human
    publication = shown["input"]["publication_id"]  # which one, without --json too
    assert f"publication     {publication}  {shown['input']['title']!r}" in human

    verified = gk.json("audit", "verify")
    assert verified["ok"] and verified["executions"] >= 2
    assert set(verified) == {"ok", "executions", "entries", "seals_checked", "reports"}
    assert verified["entries"] == sum(r["entries"] for r in verified["reports"]) >= 2 * 7

    events = gk.json("events", "--limit", "100")
    assert [e["position"] for e in events] == list(range(1, len(events) + 1))
    assert all(e["intact"] for e in events) and set(events[0]) == EVENT_KEYS
    assert {e["type"] for e in events} >= {
        "knowledge.source_ingested",
        "knowledge.analysis_generated",
        "knowledge.capsule_published",
    }
    page = gk.json("events", "--after", "2", "--limit", "2")
    assert [e["position"] for e in page] == [3, 4]

    with SurrealStore(SurrealConfig(gk.url)) as store:  # an event edited in storage
        store.select_rows("UPDATE event SET payload_json = '{}' WHERE position = 2", {})
    tampered = gk.json("events", "--limit", "3", code=1)
    assert [e["intact"] for e in tampered] == [True, False, True]
    assert "do not match their integrity hash, first at position 2" in gk.stderr
    rows = gk("events", code=1).stdout.splitlines()[1:]
    assert "knowledge.capsule_published" in "".join(rows)
    assert [row.split()[-1] for row in rows[:3]] == ["yes", "NO", "yes"]  # the INTACT column
    with SurrealStore(SurrealConfig(gk.url)) as store:  # one that no longer even parses
        store.select_rows("UPDATE event SET type = 'knowledge.bogus' WHERE position = 1", {})
    unreadable = gk("events", code=1)
    assert "stored event" in unreadable.stderr and "cannot be read" in unreadable.stderr


def start_tier(gk: Cli, tier: str, *args: str | Path) -> str:
    record = gk.json("run", "knowledge-publication", *map(str, args), "--tier", tier)
    assert record["state"] == "awaiting_approval"
    assert f"approval: {tier} needs" in record["why"]  # as the text form's `why` says
    return str(record["execution_id"])


def test_tier1_awaits_approval_then_another_approver_approves(gk: Cli) -> None:
    done = gk("run", "knowledge-publication", str(IMF), "--tier", "Tier1")
    assert "awaiting approval" in done.stdout and "approve" in done.stdout
    xid = next(w for w in done.stdout.split() if w.startswith("wfx-"))
    assert f"approve {xid} --role ROLE\n" in done.stdout  # any role will do

    own = gk("approve", xid, "--role", "reviewer", code=1)  # the requester may not approve
    assert "separation of duties" in own.stderr and own.stderr.count("\n") == 1

    # Nor record another's: naming someone else would approve it all the same.
    relayed = gk("approve", xid, "--role", "reviewer", "--approver", "alice", code=1)
    assert "'operator' started execution" in relayed.stderr
    assert "cannot record an approval of it, by 'alice'" in relayed.stderr
    assert gk.json("executions", "show", xid)["state"] == "awaiting_approval"

    alice = {"GOVKERNEL_ACTOR": "alice"}
    approved = gk.json("approve", xid, "--role", "reviewer", env=alice)
    assert approved["state"] == "succeeded"
    assert [(a["approver"], a["role"]) for a in approved["approvals"]] == [("alice", "reviewer")]
    # With --json the transitions still show, on stderr.
    assert "approved by alice as reviewer" in gk.stderr
    assert "step publish completed" in gk.stderr


def test_the_approval_suggested_names_the_role_a_request_still_wants(gk: Cli) -> None:
    run = ("run", "knowledge-publication", str(FRED), "--tier", "Tier2")
    one = gk(*run, "--required-role", "legal", "--required-role", "risk").stdout
    xid = next(w for w in one.split() if w.startswith("wfx-"))
    assert f"approve {xid} --role ROLE\n" in one  # two are wanted: either
    half = gk("approve", xid, "--role", "legal", env={"GOVKERNEL_ACTOR": "alice"}).stdout
    assert f"approve {xid} --role risk\n" in half  # the one still wanted


def test_an_expired_approval_leaves_its_role_wanted_in_the_hint() -> None:
    request = publication_request(
        [read_source(FRED)],
        title="Rates",
        publication_id="pub-roles",
        policy_refs=["POL-1"],
        required_roles=["legal", "risk"],
    )
    with build_app(load_settings({"GOVKERNEL_STORE": "memory://"})) as app:
        x = app.orchestrator.start(kp.NAME, request.to_input(), risk_tier=ImpactTier.TIER2)
        x = app.orchestrator.acting_as("alice").approve(x.id, role="legal")
    granted = x.approvals[0].granted_at
    assert outcome._role_wanted(x, granted + timedelta(hours=1)) == "risk"
    assert outcome._role_wanted(x, granted + APPROVAL_TTL) == "ROLE"  # legal's has expired


def test_tier2_needs_two_distinct_approvers(gk: Cli) -> None:
    xid = start_tier(gk, "Tier2", BIS, "--idempotency-key", "tier2-once")
    repeat = gk.json("run", "knowledge-publication", str(BIS), "--idempotency-key", "tier2-once")
    assert repeat["execution_id"] == xid and "already started" in gk.stderr
    assert "different request" not in gk.stderr  # defaults left alone ask for nothing else
    assert (repeat["reused"], repeat["request_differs"]) == (True, False)
    other = gk.json(
        "run",
        "knowledge-publication",
        str(IMF),
        "--tier",
        "Tier2",
        "--idempotency-key",
        "tier2-once",
    )
    assert other["execution_id"] == xid and "different request" in gk.stderr
    assert (other["reused"], other["request_differs"]) == (True, True)
    clerk = {"GOVKERNEL_ACTOR": "clerk"}  # someone else may record an approver's approval
    first = gk.json("approve", xid, "--role", "risk", "--approver", "alice", env=clerk)
    assert first["state"] == "awaiting_approval"
    again = gk("approve", xid, "--role", "RISK", "--approver", "Alice", code=1, env=clerk)
    assert "has already approved" in again.stderr  # a refusal
    second = gk.json("approve", xid, "--role", "compliance", env={"GOVKERNEL_ACTOR": "bob"})
    assert second["state"] == "succeeded"


def test_a_change_freeze_set_in_the_environment_stops_all_but_tier0(fresh: Cli) -> None:
    frozen = {"GOVKERNEL_CHANGE_FREEZE": "true"}
    waits = fresh.json("run", "knowledge-publication", str(FRED), "--tier", "Tier1")
    assert waits["state"] == "awaiting_approval"  # not frozen: approval is what it waits on
    refused = fresh.json(
        "run", "knowledge-publication", str(FRED), "--tier", "Tier1", code=1, env=frozen
    )
    assert refused["state"] == "failed" and "change freeze" in refused["last_error"]
    assert "policy denied ingest_sources: change freeze" in fresh.stderr
    let_through = fresh.json("run", "knowledge-publication", str(FRED), env=frozen)
    assert let_through["state"] == "succeeded" and let_through["risk_tier"] == "Tier0"


def test_reject_and_cancel(gk: Cli) -> None:
    rejected_id = start_tier(gk, "Tier1", FRED)
    rejected = gk.json("reject", rejected_id, "--reason", "out of scope")
    assert rejected["state"] == "failed" and "out of scope" in rejected["last_error"]

    cancelled_id = start_tier(gk, "Tier1", FRED)
    assert gk.json("cancel", cancelled_id)["state"] == "cancelled"
    assert "already ended as cancelled" in gk("cancel", cancelled_id, code=1).stderr


def _crashed_start(gk: Cli, publication_id: str, idempotency_key: str | None = None) -> None:
    """A start whose process "crashes" after its first step: the execution is left running
    under a lease that has not expired."""
    settings = load_settings({"GOVKERNEL_STORE": gk.url}, cwd=gk.cwd)

    def crash_at_second_commit(factory: UnitOfWorkFactory) -> UnitOfWorkFactory:
        return FaultInjector(factory, FaultPlan(fail_at_commit=2))

    with build_app(settings, Overrides(wrap_uow_factory=crash_at_second_commit)) as app:
        request = publication_request(
            [read_source(IMF)], title="Crashed", publication_id=publication_id, policy_refs=["P"]
        )
        with pytest.raises(InjectedFault):
            app.orchestrator.start(kp.NAME, request.to_input(), idempotency_key=idempotency_key)


def _running(gk: Cli) -> list[str]:
    settings = load_settings({"GOVKERNEL_STORE": gk.url}, cwd=gk.cwd)
    with build_app(settings) as app:
        running = (ExecutionState.RUNNING,)
        return [x.id for x in queries.executions_in(app.uow_factory, app.runtime.tenant, running)]


def test_a_running_execution_with_a_nul_written_in_it_stops_no_recovery_of_the_rest(
    fresh: Cli,
) -> None:
    """The engine cannot hand such a record back at all: whose it is, is read from what its
    trail pinned, to name it as this tenant's damaged one (recovery failed whole on it) and
    as missing to any other tenant (which was told it exists)."""
    _crashed_start(fresh, "crash-1")
    _crashed_start(fresh, "crash-2")
    damaged, intact = _running(fresh)
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "UPDATE $r SET last_error = $v RETURN NONE",
            {"r": RecordID("execution", damaged), "v": "x\x00"},
        )
    done = fresh.json("recover", code=1)
    assert [(x["execution_id"], x["state"]) for x in done["resumed"]] == [(intact, "succeeded")]
    [failed] = done["failed"]
    assert failed["execution_id"] == damaged and "NUL character" in failed["error"]
    theirs = fresh("executions", "show", damaged, code=2, env={"GOVKERNEL_TENANT": "beta"})
    assert theirs.stderr == f"error: no execution {damaged!r} in tenant 'beta'\n"


def test_recover_resumes_an_interrupted_execution(gk: Cli) -> None:
    _crashed_start(gk, "crash-1")
    settings = load_settings({"GOVKERNEL_STORE": gk.url}, cwd=gk.cwd)
    with build_app(settings) as app:
        [stuck] = queries.executions_in(
            app.uow_factory, app.runtime.tenant, (ExecutionState.RUNNING,)
        )
    assert stuck.current_step == 1 and stuck.lease_owner is not None  # lease not expired
    xid = stuck.id

    recovered = gk("recover")
    assert f"found {xid}" in recovered.stdout and "leases ignored" in recovered.stdout
    assert "step publish completed" in recovered.stdout and f"resumed {xid}: succeeded" in (
        recovered.stdout
    )
    assert gk.json("recover") == {
        "found": 0,
        "resumed": [],
        "not_due": [],
        "failed": [],
        "left_leased": [],
        "left_to_other_environments": [],
        "torn_transaction": None,
        "unclean_shutdown": None,
        "upgraded_from": None,
        "broken_after_crash": [],
        "broken_after_crash_in_other_tenants": 0,
    }


def test_a_rerun_after_a_crash_says_to_recover_not_to_wait_for_a_dead_worker(gk: Cli) -> None:
    _crashed_start(gk, "rerun-1", idempotency_key="rerun-1")  # its lease outlives it
    again = gk(
        "run", "knowledge-publication", str(IMF), "--publication-id", "rerun-1",
        "--title", "Crashed", "--policy-ref", "P", "--idempotency-key", "rerun-1",
    )  # fmt: skip
    assert "resumes with `govkernel" in again.stdout and "worker running it" not in again.stdout
    gk("recover")


def test_recover_resumes_the_others_when_one_record_does_not_read_back(gk: Cli) -> None:
    for n in (1, 2):
        _crashed_start(gk, f"bad-{n}")
    damaged, other = _running(gk)
    with SurrealStore(SurrealConfig(gk.url)) as store:
        store.select_rows(
            "UPDATE $r SET outputs_json = '{bad'", {"r": RecordID("execution", damaged)}
        )
    done = gk("recover", code=1)
    assert f"found {damaged}  (its record does not read back)" in done.stdout
    assert f"resumed {other}: succeeded" in done.stdout
    assert f"could not be resumed, first {damaged}: CorruptRecord" in done.stderr
    report = gk.json("recover", code=1)
    assert [f["execution_id"] for f in report["failed"]] == [damaged]
    assert report["found"] == 1 and report["resumed"] == []


def test_exit_statuses_and_clean_errors(gk: Cli) -> None:
    no_meta = gk.cwd / "plain.txt"
    no_meta.write_text("Just text.\n")
    # These fail before the store is opened, so they can run side by side.
    calls = {
        "env": (
            ("events",),
            {"GOVKERNEL_ENVIRONMENT": "prod", "GOVKERNEL_SURREAL_PASSWORD": SECRET},
        ),
        "scheme": (("--store", "redis://localhost", "events"), {}),
        "input": (("run", "knowledge-publication", str(no_meta)), {}),
        "usage": (("run", "knowledge-publication"), {}),
        "tier": (("run", "knowledge-publication", str(IMF), "--tier", "Tier9"), {}),
        "help": (("--help",), {"GOVKERNEL_SURREAL_PASSWORD": SECRET}),
    }
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = {
            name: pool.submit(gk, *args, code=0 if name == "help" else 2, env=env)
            for name, (args, env) in calls.items()
        }
    done = {name: future.result() for name, future in futures.items()}

    bad = done["env"]
    assert "GOVKERNEL_ENVIRONMENT" in bad.stderr
    assert "development, test, staging, production" in bad.stderr
    assert "GOVKERNEL_SURREAL_USERNAME" in bad.stderr  # both problems, in one report
    assert SECRET not in bad.stderr + bad.stdout and "Traceback" not in bad.stderr
    assert bad.stdout == ""
    assert "--store" in done["scheme"].stderr
    assert "unknown store scheme" in done["scheme"].stderr
    assert f"invalid input: {no_meta}: kind" in done["input"].stderr
    assert "Usage:" in done["usage"].stderr
    assert "Invalid value for '--tier'" in done["tier"].stderr
    helped = done["help"].stdout
    assert "GOVKERNEL_SURREAL_PASSWORD" in helped and SECRET not in helped

    denied = gk("run", "knowledge-publication", str(IMF), "--url", "https://twitter.com/x", code=1)
    assert "policy denied ingest_sources" in denied.stderr
    assert "'https://twitter.com/x' is not allowed for kind imf" in denied.stderr
    assert denied.stderr.count("\n") == 1 and "Traceback" not in denied.stderr
    denied_json = gk.json(
        "run", "knowledge-publication", str(IMF), "--url", "https://x.com/y", code=1
    )
    assert denied_json["state"] == "failed"

    missing = gk("executions", "show", "wfx-missing", code=2)
    assert missing.stderr == "error: no execution 'wfx-missing' in tenant 'default'\n"
    traced = gk("--debug", "approve", "wfx-missing", "--role", "r", code=2)
    assert "Traceback" in traced.stderr and "ExecutionNotFound" in traced.stderr


def test_tampered_audit_entry_fails_verification(fresh: Cli) -> None:
    xid = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]

    with SurrealStore(SurrealConfig(fresh.url)) as store:  # the CLI has exited: lock is free
        store.select_rows(
            "UPDATE $r SET reason = $reason",
            {"r": RecordID("audit", audit_key(xid, 3)), "reason": "nothing to see here"},
        )

    done = fresh("audit", "verify", code=1)
    assert f"audit trail of {xid} is broken at entry #3" in done.stderr
    assert "nothing to see here" in done.stdout  # the first bad entry is shown
    assert "other execution" not in done.stderr
    report = fresh.json("audit", "verify", xid, code=1)
    assert not report["ok"] and report["reports"][0]["first_bad_sequence"] == 3
    assert report["reports"][0]["bad_entry"]["reason"] == "nothing to see here"
    assert "CHAIN BROKEN at #3" in fresh("executions", "show", xid, code=1).stdout
    shown = fresh.json("executions", "show", xid, code=1)
    assert shown["verification"]["first_bad_sequence"] == 3
    other = fresh.json("run", "knowledge-publication", str(IMF))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:  # another problem, in another entry
        store.select_rows("DELETE $r", {"r": RecordID("audit", audit_key(other, 2))})
    both = fresh("audit", "verify", code=1)
    # The error line is the first one's; the other's own is in its row, not taken for the first's.
    assert "(and 1 other execution affected, each as its row says)" in both.stderr
    assert re.search(rf"^{other} .*BROKEN at #2", both.stdout, re.M), both.stdout


def test_backup_copies_the_store_to_open_as_it_stood(fresh: Cli) -> None:
    xid = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    dest = fresh.cwd / "backup"
    done = fresh.json("backup", str(dest))
    assert done["backup"] == str(dest) and done["bytes"] > 0
    fresh("run", "knowledge-publication", str(IMF))  # after the backup: not in it
    restored = fresh.json("--store", f"surrealkv://{dest}", "executions", "list")
    assert [x["execution_id"] for x in restored] == [xid]
    fresh("--store", f"surrealkv://{dest}", "audit", "verify")
    again = fresh("backup", str(dest), code=2)
    assert (
        again.stderr
        == f"error: invalid input: destination: {dest} exists: a backup goes into a new one\n"
    )
    for blank in ("", " "):  # not the current directory, nor one named by a slip
        assert "must not be empty" in fresh("backup", blank, code=2).stderr
    memory = fresh("--store", "mem://", "backup", str(fresh.cwd / "m"), code=2)
    assert "a mem:// store is held in memory" in memory.stderr
    with SurrealStore(SurrealConfig(fresh.url)):  # as a service holds it
        held = fresh("backup", str(fresh.cwd / "held"), code=75).stderr
    assert "a service holding it backs it up itself, with app.backup(DEST)" in held


def test_a_backup_never_upgrades_the_store_it_copies(fresh: Cli) -> None:
    """A backup by a newer govkernel upgraded the store first: neither it nor its copy then
    opened with the govkernel that wrote them, the way back the README's "back it up before
    upgrading" keeps (an upgrade pass, h156). Refused instead, saying how, nothing changed."""
    fresh.json("run", "knowledge-publication", str(FRED))
    meta = RecordID(surreal_schema.META_TABLE, "schema")
    older = surreal_schema.SCHEMA_VERSION - 1
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows("UPSERT $m SET version = $v", {"m": meta, "v": older})
    dest = fresh.cwd / "backup"
    refused = fresh("backup", str(dest), code=2).stderr
    assert f"older govkernel and is left as it is: schema version {older}" in refused
    assert "back it up with the govkernel that wrote it" in refused and "cp -a" in refused
    assert not dest.exists()
    with pytest.raises(StorageUnavailable, match="left as it is"):
        SurrealStore(SurrealConfig(fresh.url, upgrade=False))
    settings = Settings(store_url=fresh.url)
    with pytest.raises(StorageUnavailable, match="refused rather than upgraded"):
        build_app(settings, Overrides(upgrade_store=False)).__enter__()
    # None is the default, as for the other fields (it refused, h157): any other open upgrades
    with build_app(settings, Overrides(upgrade_store=cast(Any, None))) as app:
        assert app.store.upgraded_from == older  # type: ignore[attr-defined]
    assert fresh.json("backup", str(dest))["bytes"] > 0


def test_a_reason_edited_to_megabytes_is_shown_cut(fresh: Cli) -> None:
    xid = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "UPDATE $r SET reason = $reason RETURN NONE",
            {"r": RecordID("audit", audit_key(xid, 2)), "reason": "z" * 2_000_000},
        )
    for shown in (fresh("executions", "show", xid, code=1), fresh("audit", "verify", code=1)):
        assert "(2,000,000 characters; --json shows all)" in shown.stdout
        assert len(shown.stdout) < 30_000  # not every row padded to two million
    report = fresh.json("audit", "verify", xid, code=1)
    assert report["reports"][0]["bad_entry"]["reason"] == "z" * 2_000_000


def test_text_with_a_nul_written_in_storage_stops_no_check_of_the_rest(fresh: Cli) -> None:
    """The engine cannot hand back such a record, and failed every read that met it: a
    listing, a whole-store verification, anything after. Its readers now name it as damaged
    and go on with the others."""
    kept = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    edited = fresh.json("run", "knowledge-publication", str(IMF))["execution_id"]
    entry = fresh.json("run", "knowledge-publication", str(BIS))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "UPDATE $r SET last_error = $v RETURN NONE",
            {"r": RecordID("execution", edited), "v": "x\x00"},
        )
        store.select_rows(  # read in a listing of entries: said as such, not a missing field
            "UPDATE $r SET reason = $v RETURN NONE",
            {"r": RecordID("audit", audit_key(entry, 2)), "v": "x\x00"},
        )
    verified = fresh("audit", "verify", code=1)
    assert re.search(rf"{kept} +\d+ +ok", verified.stdout)
    assert re.search(rf"{edited} .*BROKEN.*holds text with a NUL character", verified.stdout)
    assert re.search(
        rf"{entry} .*BROKEN.*cannot be read at all \(text holding a NUL", verified.stdout
    )
    assert "record is gone" not in verified.stdout  # it is there, and said to be damaged
    listed = fresh("executions", "list", code=1)
    assert kept in listed.stdout
    assert f"1 stored execution cannot be read and is not listed, first {edited}" in listed.stderr
    shown = fresh("executions", "show", edited, code=1).stderr
    assert f"execution {edited!r}: a stored record holds text with a NUL character" in shown
    assert "edited in storage" in shown and "store unavailable" not in shown
    alone = fresh.json("audit", "verify", edited, code=1)  # reported as in the whole check
    assert [(r["execution_id"], r["ok"]) for r in alone["reports"]] == [(edited, False)]
    assert "NUL character" in alone["reports"][0]["problem"]
    elsewhere = fresh("audit", "verify", edited, code=2, env={"GOVKERNEL_TENANT": "beta"})
    assert f"no execution {edited!r} in tenant 'beta'" in elsewhere.stderr  # still not theirs
    _die_holding(fresh.url)  # the check after a crash names it too, and goes on with the rest
    reported = fresh.json("recover", code=1)
    assert {r["execution_id"] for r in reported["broken_after_crash"]} == {edited, entry}


def test_an_execution_whose_tenant_no_longer_reads_is_named_in_its_own_tenant(
    fresh: Cli,
) -> None:
    """h173: after a crash, one whose tenant was made a number was counted as another
    tenant's ("1 in other tenants"), naming nothing: its first audit entry pinned whose it
    is, as `audit verify` already read it."""
    xid = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "DEFINE FIELD OVERWRITE tenant ON TABLE execution TYPE any;"
            " UPDATE $r SET tenant = 42 RETURN NONE;",
            {"r": RecordID("execution", xid)},
        )
    _die_holding(fresh.url)
    reported = fresh.json("recover", code=1)
    assert [r["execution_id"] for r in reported["broken_after_crash"]] == [xid]
    assert reported["broken_after_crash_in_other_tenants"] == 0
    # Said as what it is (h175: blamed on its input record, which was intact).
    assert "its tenant is not text" in fresh("executions", "show", xid, code=1).stderr
    fresh("executions", "show", xid, code=2, env={"GOVKERNEL_TENANT": "beta"})


def test_an_input_record_moved_to_another_tenant_is_damage_not_another_tenants(
    fresh: Cli,
) -> None:
    """h173: an input record's tenant was never compared with its execution's. Whose the
    execution is, once its own record cannot be read, is what its first entry pinned, and
    only while that entry's hash holds (h175: an edited pin told another tenant of it)."""
    xid = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "UPDATE $r SET tenant = 'beta' RETURN NONE", {"r": RecordID("execution_input", xid)}
        )
    said = f"its input record (execution_input {xid!r}) names another tenant"
    [report] = fresh.json("audit", "verify", code=1)["reports"]
    assert (report["execution_id"], report["ok"]) == (xid, False) and said in report["problem"]
    assert said in fresh("executions", "show", xid, code=1).stderr
    with SurrealStore(SurrealConfig(fresh.url)) as store:  # and then its record unreadable
        store.select_rows(
            "UPDATE $r SET last_error = $v RETURN NONE",
            {"r": RecordID("execution", xid), "v": "x\x00"},
        )
    beta = fresh("executions", "show", xid, code=2, env={"GOVKERNEL_TENANT": "beta"})
    assert beta.stderr == f"error: no execution {xid!r} in tenant 'beta'\n"  # the pin says
    [report] = fresh.json("audit", "verify", code=1)["reports"]
    assert report["entries"] == 7 and "NUL character" in report["problem"]
    first = RecordID("audit", audit_key(xid, 1))
    with SurrealStore(SurrealConfig(fresh.url)) as store:  # its pin edited too (h175)
        [pinned] = store.select_rows("SELECT VALUE pinned FROM ONLY $r", {"r": first})
        moved = pinned.replace('"tenant":"default"', '"tenant":"beta"')
        assert moved != pinned
        store.select_rows("UPDATE $r SET pinned = $p RETURN NONE", {"r": first, "p": moved})
    beta = fresh("executions", "show", xid, code=2, env={"GOVKERNEL_TENANT": "beta"})
    assert beta.stderr == f"error: no execution {xid!r} in tenant 'beta'\n"  # its hash fails
    [report] = fresh.json("audit", "verify", code=1)["reports"]  # still its owner's to see
    assert report["execution_id"] == xid and not report["ok"]


def test_an_execution_copied_under_a_number_for_its_id_stops_no_check_of_the_rest(
    fresh: Cli,
) -> None:
    kept = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        [doc] = store.select_rows(
            "SELECT * OMIT id FROM ONLY $r", {"r": RecordID("execution", kept)}
        )
        store.select_rows(
            "CREATE execution:12345 CONTENT $c RETURN NONE",
            {"c": doc | {"idempotency_key": "copied"}},
        )
    problem = "listed, but no execution reads by this id: its record's id is not text"
    for command in (("audit", "verify"), ("audit", "anchor", "-o", str(fresh.cwd / "a.json"))):
        done = fresh(*command, code=1)
        said = done.stdout + done.stderr
        assert re.search(rf"12345 .*{problem}", said)
        assert re.search(rf"{kept} +\d+ +ok", said) or "anchored 1 execution" in said
    keyed = {"GOVKERNEL_AUDIT_KEY": "k3y-0123456789abcdef-" + "7" * 40}
    sealed = fresh.json("audit", "seal", "--unsealed", code=1, env=keyed)
    outcomes = {r["execution_id"]: (r["outcome"], r["problem"]) for r in sealed["results"]}
    assert outcomes[kept] == ("sealed", None)  # the rest sealed, not stopped at the stray
    assert outcomes["12345"][0] == "refused" and problem in outcomes["12345"][1]


def test_a_page_goes_on_from_an_execution_whose_input_cannot_be_read(fresh: Cli) -> None:
    """A listing never reads inputs (they can run to megabytes): neither does its cursor."""
    older = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    newer = fresh.json("run", "knowledge-publication", str(IMF))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "UPDATE $r SET input_json = '{'", {"r": RecordID("execution_input", newer)}
        )
    page = fresh.json("executions", "list", "--limit", "1", "--before", newer)
    assert [x["execution_id"] for x in page] == [older]


def test_another_tenants_unreadable_execution_reads_as_missing_as_a_cursor_too(
    fresh: Cli,
) -> None:
    beta = {"GOVKERNEL_TENANT": "beta"}
    theirs = fresh.json("run", "knowledge-publication", str(FRED), env=beta)["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows("UPDATE $r SET state = 'bogus'", {"r": RecordID("execution", theirs)})
    refused = fresh("executions", "list", "--before", theirs, code=2)
    # Read for an anchor (`audit verify --anchors`), it is missing too, not "cannot be read".
    with build_app(load_settings({"GOVKERNEL_STORE": fresh.url})) as app:
        with pytest.raises(RecordNotFound):
            queries.audit_trail(app.uow_factory, "default", theirs)
        with pytest.raises(CorruptRecord):
            queries.audit_trail(app.uow_factory, "beta", theirs)
    assert refused.stderr == f"error: no execution '{theirs}' in tenant 'default'\n"  # as show says


def test_an_execution_record_deleted_from_storage_is_reported_by_its_trail(fresh: Cli) -> None:
    gone = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    kept = fresh.json("run", "knowledge-publication", str(IMF))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows("DELETE $r", {"r": RecordID("execution", gone)})
    done = fresh("audit", "verify", code=1)
    assert f"{gone}" in done.stdout and "the execution record is gone" in done.stdout
    report = fresh.json("audit", "verify", code=1)
    assert {r["execution_id"]: r["ok"] for r in report["reports"]} == {kept: True, gone: False}
    # Another tenant's trails are not this tenant's to name.
    assert fresh.json("audit", "verify", env={"GOVKERNEL_TENANT": "beta"})["ok"]
    # After a crash, every tenant's are checked before the crash is forgotten.
    _die_holding(fresh.url)
    assert f"broken after the crash, first {gone}" in fresh("recover", code=1).stderr


def test_an_audit_entry_that_does_not_read_is_named_where_it_is(fresh: Cli) -> None:
    xid = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "UPDATE $r SET from_state = 'bogus'", {"r": RecordID("audit", audit_key(xid, 4))}
        )
    shown = fresh("executions", "show", xid, code=1)  # the execution is still shown
    assert shown.stdout.split()[:2] == ["execution", xid]
    assert f"CHAIN BROKEN at #4: stored audit entry '{xid}:000000004'" in shown.stdout
    # The entries before it are shown (h173: none were, over the trail's empty table).
    assert re.search(r"\n3 +[-0-9: ]+ operator +running -> running +ingest ", shown.stdout)
    assert "audit trail (7 entries, CHAIN BROKEN at #4" in shown.stdout  # stored, not shown
    record = fresh.json("executions", "show", xid, code=1)
    assert (record["state"], record["verification"]["first_bad_sequence"]) == ("succeeded", 4)
    [report] = fresh.json("audit", "verify", code=1)["reports"]
    assert report["first_bad_sequence"] == 4 and "'bogus' is not a valid" in report["problem"]


def test_an_execution_moved_to_another_tenant_is_gone_from_its_own(fresh: Cli) -> None:
    """Its record made again under another tenant (tenant is read-only, not undeletable): its
    own tenant's check reports its trail left behind, as for a deleted record."""
    moved = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    kept = fresh.json("run", "knowledge-publication", str(IMF))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        doc = store.dump("execution")[moved] | {"tenant": "beta"}
        store.select_rows(
            "BEGIN; DELETE $r; CREATE $r CONTENT $d RETURN NONE; COMMIT;",
            {
                "r": RecordID("execution", moved),
                "d": {k: v for k, v in doc.items() if v is not None},
            },
        )
    report = fresh.json("audit", "verify", code=1)
    assert {r["execution_id"]: r["ok"] for r in report["reports"]} == {kept: True, moved: False}
    [alone] = fresh.json("audit", "verify", moved, code=1)["reports"]
    assert "moved to another tenant" in alone["problem"]
    beta = fresh.json("audit", "verify", env={"GOVKERNEL_TENANT": "beta"}, code=1)
    assert "tenant" in beta["reports"][0]["problem"]


def test_first_pins_nested_past_the_recursion_limit_break_one_chain(fresh: Cli) -> None:
    """Written without the key, into one tenant's execution: every check still runs."""
    bad = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    kept = fresh.json("run", "knowledge-publication", str(IMF))["execution_id"]
    fresh("run", "knowledge-publication", str(FRED), env={"GOVKERNEL_TENANT": "beta"})
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "UPDATE $e SET pinned = $p",
            {"e": RecordID("audit", audit_key(bad, 1)), "p": "[" * 100_000 + "]" * 100_000},
        )
    report = fresh.json("audit", "verify", code=1)
    assert {r["execution_id"]: r["ok"] for r in report["reports"]} == {kept: True, bad: False}
    assert fresh.json("audit", "verify", env={"GOVKERNEL_TENANT": "beta"})["ok"]
    assert len(fresh.json("executions", "list")) == 2
    _die_holding(fresh.url)
    assert f"broken after the crash, first {bad}" in fresh("recover", code=1).stderr


def test_an_execution_whose_tenant_is_not_text_is_reported_by_its_trail(fresh: Cli) -> None:
    """Its record is no tenant's listing's, so its own tenant's trail left reports it."""
    odd = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    kept = fresh.json("run", "knowledge-publication", str(IMF))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "DEFINE FIELD OVERWRITE tenant ON TABLE execution TYPE any;"
            " UPDATE $r SET tenant = NULL RETURN NONE;",
            {"r": RecordID("execution", odd)},
        )
    report = fresh.json("audit", "verify", code=1)
    assert {r["execution_id"]: r["ok"] for r in report["reports"]} == {kept: True, odd: False}
    [alone] = fresh.json("audit", "verify", odd, code=1)["reports"]
    assert "its tenant no longer reads" in alone["problem"]
    fresh("audit", "anchor", "--output", str(fresh.cwd / "anchors.json"), code=1)
    assert fresh.json("audit", "verify", env={"GOVKERNEL_TENANT": "beta"})["ok"]


def test_a_moved_execution_whose_entry_does_not_read_stops_no_check(fresh: Cli) -> None:
    moved = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    kept = fresh.json("run", "knowledge-publication", str(IMF))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        doc = store.dump("execution")[moved] | {"tenant": "beta"}
        store.select_rows(
            "BEGIN; DELETE $r; CREATE $r CONTENT $d RETURN NONE; COMMIT;"
            " UPDATE $e SET to_state = 'bogus';",
            {
                "r": RecordID("execution", moved),
                "d": {k: v for k, v in doc.items() if v is not None},
                "e": RecordID("audit", audit_key(moved, 3)),
            },
        )
    report = fresh.json("audit", "verify", code=1)
    assert {r["execution_id"]: r["ok"] for r in report["reports"]} == {kept: True, moved: False}
    fresh("audit", "anchor", "--output", str(fresh.cwd / "anchors.json"), code=1)
    assert kept in (fresh.cwd / "anchors.json").read_text()


def test_another_tenants_execution_with_a_trail_from_before_pins_reads_as_missing(
    fresh: Cli,
) -> None:
    """Its first entry names no tenant: nothing says it was ever this tenant's."""
    theirs = fresh.json("run", "knowledge-publication", str(FRED), env={"GOVKERNEL_TENANT": "beta"})
    xid = theirs["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "UPDATE $e SET pinned = NONE", {"e": RecordID("audit", audit_key(xid, 1))}
        )
    fresh("audit", "verify", xid, code=2)
    assert fresh.stderr == f"error: no execution '{xid}' in tenant 'default'\n"


@pytest.mark.parametrize("removed", ["middle", "end of a page", "last"])
def test_a_removed_event_is_reported_not_silently_skipped(fresh: Cli, removed: str) -> None:
    """Positions have no gaps: a missing one must not end the listing quietly, hiding every
    event after it (nor must a missing last event pass as the end of the log)."""
    fresh("run", "knowledge-publication", str(FRED))
    fresh("run", "knowledge-publication", str(IMF))
    count = len(fresh.json("events", "--limit", "100"))
    position = {"middle": 2, "end of a page": 3, "last": count}[removed]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows("DELETE event WHERE position = $p", {"p": position})
    limit = "3" if removed == "end of a page" else "100"
    done = fresh("events", "--limit", limit, code=1)
    assert f"position {position} is missing" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    shown = fresh.json("events", "--limit", limit, code=1)  # the events before it still show
    assert [e["position"] for e in shown] == list(range(1, position))
    right_before = fresh("events", "--after", str(position - 1), code=1)
    assert "no events after" not in right_before.stdout  # they are there, past the gap
    assert f"position {position} is missing" in right_before.stderr
    # A consumer is told how to read on past it, and can (h168: it could not tell how).
    assert f"(`--after {position}` reads on past it)" in right_before.stderr
    past = fresh.json("events", "--after", str(position), "--limit", "100")
    assert [e["position"] for e in past] == list(range(position + 1, count + 1))


def test_an_event_counter_set_back_in_storage_is_said_not_retried_as_a_duplicate(
    fresh: Cli,
) -> None:
    """Every mutation then took a position already given out: each was retried as a
    duplicate, three times, and failed as one, the counter never named (h168)."""
    fresh("run", "knowledge-publication", str(FRED))
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows("UPDATE govkernel_counter:events SET n -= 2", {})
    failed = fresh("run", "knowledge-publication", str(IMF), code=1)
    assert "CorruptRecord: the event log's counter is behind its last event" in failed.stderr
    assert "set govkernel_counter:events to the last event's position" in failed.stderr
    assert len(fresh.json("executions", "list")) == 1  # its start went with its first step


def test_the_next_page_of_events_is_hinted_on_stderr_beside_json(fresh: Cli) -> None:
    fresh("run", "knowledge-publication", str(FRED))
    done = fresh("--json", "events", "--limit", "2")
    assert len(json.loads(done.stdout)) == 2  # stdout holds the JSON alone
    assert "govkernel" in done.stderr and done.stderr.endswith(" events --after 2 --limit 2\n")
    default = fresh("--json", "events", "--after", "1", "--limit", "50")
    assert "events --after" not in default.stderr  # (3 events: no more than a page)
    head = len(fresh.json("events", "--limit", "100"))
    last = fresh("events", "--after", str(head - 1), "--limit", "1")  # exactly the last one
    assert "events --after" not in last.stdout + last.stderr  # no next page of nothing


def test_a_quiet_tenant_is_told_where_the_log_was_read_to(fresh: Cli) -> None:
    """Another tenant's events after its own are read past: it is told to go on from the
    end of the log, or its cursor never moves and every poll reads them past again."""
    quiet, busy = {"GOVKERNEL_TENANT": "quiet"}, {"GOVKERNEL_TENANT": "busy"}
    fresh("run", "knowledge-publication", str(FRED), env=quiet)  # events 1-3
    fresh("run", "knowledge-publication", str(IMF), env=busy)  # events 4-6
    polled = fresh("--json", "events", "--after", "3", env=quiet)
    assert json.loads(polled.stdout) == []
    assert polled.stderr.startswith("  next  govkernel --store ")
    assert polled.stderr.endswith(" events --after 6\n")
    text = fresh("events", "--after", "2", env=quiet).stdout
    assert text.endswith(" events --after 6\n") and "  next  " in text  # past its event 3
    caught_up = fresh("events", "--after", "6", env=quiet)
    assert "--after" not in caught_up.stdout + caught_up.stderr
    own = fresh("events", env=busy)  # its last event is the log's: nothing to skip
    assert "--after" not in own.stdout + own.stderr


def test_an_unreadable_event_is_reported_after_the_events_before_it(fresh: Cli) -> None:
    fresh("run", "knowledge-publication", str(FRED))
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows("UPDATE event SET type = 'knowledge.no_such_type' WHERE position = 3", {})
    done = fresh("events", code=1)
    assert "position 3 cannot be read" in done.stderr and "Traceback" not in done.stderr
    shown = fresh.json("events", code=1)
    assert [e["position"] for e in shown] == [1, 2]


def test_one_unreadable_execution_hides_nothing_else(fresh: Cli) -> None:
    """A record damaged by hand is reported broken; tampering elsewhere is still found, and
    the listing shows everything it can read."""
    corrupt = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    forged = fresh.json("run", "knowledge-publication", str(IMF))["execution_id"]
    intact = fresh.json("run", "knowledge-publication", str(BIS))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "UPDATE $r SET attempts_json = '{not json'", {"r": RecordID("execution", corrupt)}
        )
        store.select_rows(
            "UPDATE $r SET reason = 'forged'", {"r": RecordID("audit", audit_key(forged, 3))}
        )

    report = fresh.json("audit", "verify", code=1)
    verdicts = {r["execution_id"]: r["ok"] for r in report["reports"]}
    assert verdicts == {corrupt: False, forged: False, intact: True}
    single = fresh.json("audit", "verify", corrupt, code=1)
    assert "cannot be read" in single["reports"][0]["problem"]
    whole = len(fresh.json("executions", "show", intact)["audit"])
    assert single["reports"][0]["entries"] == whole  # its trail is there, and counted

    from composition import queries

    with SurrealStore(SurrealConfig(fresh.url)) as store:  # as recover checks after a crash
        broken = dict(
            (r.execution_id, r.entries) for _, r in queries.broken_chains(store.unit_of_work)
        )
    assert broken[corrupt] == whole

    listed = fresh("--json", "executions", "list", code=1)
    assert {x["execution_id"] for x in json.loads(listed.stdout)} == {forged, intact}
    assert f"cannot be read and is not listed, first {corrupt}" in listed.stderr


def test_suggested_commands_can_be_pasted_into_a_shell(tmp_path: Path) -> None:
    spaced = Cli(tmp_path / "my store" / "x", tmp_path)
    done = spaced("run", "knowledge-publication", str(FRED))
    (details,) = [line for line in done.stdout.splitlines() if line.strip().startswith("details")]
    command = details.split(None, 1)[1]
    argv = shlex.split(command)
    assert argv[1:3] == ["--store", spaced.url] and argv[3:5] == ["executions", "show"]


def test_a_reader_that_stops_reading_does_not_stop_the_run(fresh: Cli) -> None:
    """`govkernel run ... | head -1`: the pipe closes after one line, the run goes on."""
    command = [sys.executable, "-m", "composition.cli", "--store", fresh.url]
    writer = subprocess.Popen(
        [*command, "run", "knowledge-publication", str(FRED), str(IMF), str(BIS)],
        env=clean_env(),
        cwd=fresh.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stderr is not None
    writer.stdout.readline()
    writer.stdout.close()  # the reader goes away after its first line
    err = writer.stderr.read()
    assert writer.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    (listed,) = fresh.json("executions", "list")
    assert listed["state"] == "succeeded"


def test_output_that_cannot_be_written_is_an_error_that_says_what_was_done(fresh: Cli) -> None:
    """A full disk under stdout: exit 2 (not 1, a denial), and the work stands."""
    full = "could not write to standard output: [Errno 28] No space left on device"
    ran = fresh("run", "knowledge-publication", str(FRED), code=2, redirect=">/dev/full").stderr
    (xid,) = [x["execution_id"] for x in fresh.json("executions", "list")]
    assert ran == (
        f"error: {full}; execution {xid} was started all the same (now succeeded):"
        f" `govkernel --store {fresh.url} executions show {xid}` shows it\n"
    )
    listed = fresh("--json", "executions", "list", code=2, redirect=">/dev/full")
    assert listed.stderr == f"error: {full}\n"  # a read: there is nothing more to say

    waiting = start_tier(fresh, "Tier1", IMF)
    alice = {"GOVKERNEL_ACTOR": "alice"}
    approved = fresh("approve", waiting, "--role", "r", code=2, env=alice, redirect=">/dev/full")
    assert f"{full}; the approval of {waiting} was recorded all the same (now succeeded)" in (
        approved.stderr
    )
    assert fresh.json("executions", "show", waiting)["state"] == "succeeded"
    recovered = fresh("recover", code=2, redirect=">/dev/full").stderr
    assert f"{full}; the recovery ran all the same" in recovered


def test_a_stderr_that_cannot_be_written_changes_no_outcome(fresh: Cli) -> None:
    """Notes, hints and transitions (with --json) go to stderr: extras, whose loss stops
    nothing, and changes no exit status."""
    full = "2>/dev/full"
    started = fresh(
        "--json", "run", "knowledge-publication", str(IMF), "--tier", "Tier1", redirect=full
    )
    waiting = json.loads(started.stdout)["execution_id"]
    alice = {"GOVKERNEL_ACTOR": "alice"}
    approved = fresh("--json", "approve", waiting, "--role", "r", env=alice, redirect=full)
    assert json.loads(approved.stdout)["state"] == "succeeded"
    other = start_tier(fresh, "Tier1", FRED)
    cancelled = fresh("--json", "cancel", other, redirect=full)
    assert json.loads(cancelled.stdout)["state"] == "cancelled"
    paged = fresh("--json", "executions", "list", "--limit", "1", redirect=full)  # with a hint
    assert len(json.loads(paged.stdout)) == 1
    anchored = fresh("audit", "anchor", redirect=full)  # "anchored 2 executions" on stderr
    assert len(json.loads(anchored.stdout)["anchors"]) == 2
    fresh("executions", "show", waiting, "--bogus", code=2, redirect=full)  # usage, not internal
    assert fresh("--bogus", code=2, redirect="2>&-").stdout == ""  # nor printed on stdout


def test_records_with_nowhere_to_go_are_refused_not_lost(fresh: Cli) -> None:
    """`audit anchor`'s stdout is its product: closed, or its reader gone, it failed."""
    (xid,) = [fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]]
    lost = "error: the anchor document could not be written:"
    closed = fresh("audit", "anchor", code=2, redirect=">&-").stderr
    assert closed == f"{lost} standard output is closed (--output FILE writes it to a file)\n"
    read, write = os.pipe()
    os.close(read)  # `| (exec 0<&-; sleep 2)`, without the race
    try:
        gone = fresh("audit", "anchor", code=2, stdout=write).stderr
    finally:
        os.close(write)
    assert gone == f"{lost} [Errno 32] Broken pipe\n"
    fresh("audit", "anchor", "--output", "anchors.json", redirect=">&-")  # stdout not needed
    # Reads that print records refuse a closed stdout instead of printing them to no one.
    said = "error: standard output is closed: what this command prints would be lost\n"
    for command in (
        ("executions", "list"),
        ("executions", "show", xid),
        ("events",),
        ("audit", "verify"),
        ("workflows",),
        ("--json", "audit", "anchor", "--output", "anchors.json"),
    ):
        assert fresh(*command, code=2, redirect=">&-").stderr == said, command
    # A run is not a read: a closed stdout silences it, never the work.
    fresh("run", "knowledge-publication", str(IMF), redirect=">&-")
    assert len(fresh.json("executions", "list")) == 2


def test_a_write_the_system_takes_only_part_of_is_a_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A disk filling up mid-way: the system takes part of a write, then nothing. Python's
    own streams can let that pass unsaid (the anchors cut at 12 KiB, exit 0)."""
    from composition.cli import streams

    taken: list[int] = []

    def filling_up(fd: int, data: bytes | memoryview) -> int:
        taken.append(min(len(data), 10) if not taken else 0)
        return taken[-1]

    with (tmp_path / "out").open("w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(os, "write", filling_up)
        failed = streams.write_out("x" * 100, err=False)
    assert isinstance(failed, OSError) and failed.errno == errno.ENOSPC
    assert taken == [10, 0]


def test_a_reader_leaving_mid_way_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past what the pipe holds, the rest meets a reader gone: not all was delivered."""
    from composition.cli import streams

    read, write = os.pipe()

    def leave_early() -> None:
        os.read(read, 100)
        os.close(read)

    reader = threading.Thread(target=leave_early)
    reader.start()
    with os.fdopen(write, "w") as out:
        monkeypatch.setattr(sys, "stdout", out)
        failed = streams.write_out("x" * 1_000_000, err=False)
        monkeypatch.undo()
        with contextlib.suppress(OSError):
            out.close()
    reader.join()
    assert isinstance(failed, BrokenPipeError)


def test_help_and_the_version_follow_the_rules_for_stdout(fresh: Cli) -> None:
    for command in (("--version",), ("executions", "--help")):
        full = fresh(*command, code=2, redirect=">/dev/full", store=False).stderr
        assert full.startswith("error: could not write to standard output: [Errno 28]"), command
        read, write = os.pipe()
        os.close(read)  # a reader gone: a quiet end, not a step's sys.exit(1)
        try:
            assert fresh(*command, stdout=write, store=False).stderr == ""
        finally:
            os.close(write)


def test_a_stream_held_for_one_closed_is_a_stream_to_a_subprocess_too() -> None:
    """Closed by the caller (`>&-`), stdout is held on /dev/null: a step's subprocess that
    prints gets it too, not a closed stream (its `echo` failed) or a file of ours."""
    script = (
        "import os, subprocess\n"
        "from composition.cli.streams import hold_closed_streams\n"
        "hold_closed_streams()\n"
        "subprocess.run(['sh', '-c', 'echo printed'], check=True)\n"
    )
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_a_locale_that_is_not_utf8_still_takes_and_gives_any_text(fresh: Cli) -> None:
    """LC_ALL=C without Python's UTF-8 mode: arguments arrive as escaped bytes (a title was
    refused as not UTF-8) and stdout takes ASCII alone (`--json` output was an internal
    error): arguments are read as the UTF-8 they are, and JSON escapes what ASCII has not."""
    ascii_locale = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    ran = fresh(
        "--json", "run", "knowledge-publication", str(FRED), "--title", "Grüße", env=ascii_locale
    )
    assert ran.stdout.isascii()
    record = json.loads(ran.stdout)
    assert record["state"] == "succeeded"
    shown = fresh.json("executions", "show", record["execution_id"])  # as UTF-8, unescaped
    assert shown["input"]["title"] == "Grüße"


def test_a_closed_stdin_is_a_usage_error(fresh: Cli) -> None:
    run = ("--json", "run", "workflow", "knowledge_publication", "--input-file", "-")
    closed = fresh(*run, code=2, redirect="<&-").stderr
    assert "Invalid value for '--input-file': standard input is closed: give a file" in closed
    # A document named `-` is a file of that name: none here, and nothing is read from stdin.
    named = fresh("run", "knowledge-publication", "-", code=2, redirect="<&-").stderr
    assert named == "error: -: no such file\n"


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux's /proc")
def test_an_input_file_that_fails_as_it_is_read_is_a_usage_error(fresh: Cli) -> None:
    # Opened, then refused with EIO at its first read: was an internal error.
    run = ("run", "workflow", "knowledge_publication", "--input-file", "/proc/self/mem")
    refused = fresh(*run, code=2).stderr
    assert "Invalid value for '--input-file': cannot be read: Input/output error" in refused
    assert "nothing has run there yet" in fresh("executions", "list", code=2).stderr


def _progress_on_a_terminal(fresh: Cli, term: str | None) -> bytes:
    """What a run reading five documents draws on stderr, a terminal, with TERM=`term`."""
    for n in range(5):
        (fresh.cwd / f"note-{n}.md").write_text(
            f"---\nkind: fsb\nurl: https://fsb.org/{n}\n---\n{n}"
        )
    env = {k: v for k, v in clean_env().items() if k != "TERM"}
    command = [sys.executable, "-m", "composition.cli", "--store", fresh.url]
    master, terminal = os.openpty()
    try:
        done = subprocess.run(
            [*command, "run", "knowledge-publication", *(f"note-{n}.md" for n in range(5))],
            env=env | ({} if term is None else {"TERM": term}),
            cwd=fresh.cwd,
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=60,
        )
    finally:
        os.close(terminal)
    drawn = b""
    with contextlib.suppress(OSError):  # EIO: all of it was read
        while chunk := os.read(master, 4096):
            drawn += chunk
    os.close(master)
    assert done.returncode == 0, drawn
    return drawn


def test_a_dumb_terminal_gets_no_progress_bar(fresh: Cli) -> None:
    assert b"reading documents" in _progress_on_a_terminal(fresh, "xterm")  # one that draws
    for term in ("dumb", None):
        drawn = _progress_on_a_terminal(fresh, term)
        assert b"\033" not in drawn and b"\r" not in drawn, (term, drawn)


@pytest.mark.parametrize(
    ("signum", "said"), [(signal.SIGTERM, "terminated"), (signal.SIGHUP, "hung up")]
)
def test_sigterm_stops_a_command_like_ctrl_c_and_closes_the_store(
    fresh: Cli, signum: int, said: str
) -> None:
    """SIGHUP too (the terminal closed): it killed the command, holding the store, which
    the next command then took for a crash (found by a crash and limits pass)."""
    fresh("run", "knowledge-publication", str(FRED))
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from composition import cli, queries\n"
            "def slow(*args, **kwargs):\n"
            "    print('listing', flush=True)\n"
            "    time.sleep(60)\n"
            "queries.recent_executions = slow\n"
            f"sys.exit(cli.run_cli(['--store', {fresh.url!r}, 'executions', 'list']))\n",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "listing\n"
    child.send_signal(signum)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 128 + signum
    assert f"{said}; nothing was changed" in err
    lock = Path(fresh.url.removeprefix("surrealkv://") + ".lock")
    assert lock.read_text() == ""  # closed on the way out: no crash to check
    assert "not closed cleanly" not in fresh("recover").stdout


def _interrupted_run(fresh: Cli, slow_step: str, *more: str) -> str:
    """`run knowledge-publication` stopped by SIGTERM while `slow_step` runs: its stderr
    (and its stdout after it, if any)."""
    owner = "running" if slow_step == "read_sources" else "KnowledgeService"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from composition import cli\n"
            "from composition.cli import running\n"
            "from domain.services.knowledge import KnowledgeService\n"
            "def slow(*args, **kwargs):\n"
            "    print('slow', file=sys.stderr, flush=True)\n"
            "    time.sleep(60)\n"
            f"{owner}.{slow_step} = slow\n"
            f"sys.exit(cli.run_cli(['--store', {fresh.url!r}, *{list(more)!r}, 'run',"
            f" 'knowledge-publication', {str(FRED)!r}]))\n",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    assert child.stderr is not None
    before = []
    while (line := child.stderr.readline()) not in ("slow\n", ""):
        before.append(line)
    child.terminate()
    out, err = child.communicate(timeout=30)
    assert child.returncode == 143, err
    return "".join(before) + err + out


def test_a_run_interrupted_before_its_start_was_stored_names_the_key_to_rerun_it(
    fresh: Cli,
) -> None:
    err = _interrupted_run(fresh, "ingest")  # the start commits with the first step
    key = err.split("--idempotency-key ")[1].split()[0]
    again = fresh.json("run", "knowledge-publication", str(FRED), "--idempotency-key", key)
    assert again["reused"] is False and again["state"] == "succeeded"
    assert fresh.json("run", "knowledge-publication", str(FRED), "--idempotency-key", key)["reused"]
    assert len(fresh.json("executions", "list")) == 1  # one execution, never two


def test_a_run_interrupted_after_its_start_was_stored_names_the_execution(fresh: Cli) -> None:
    err = _interrupted_run(fresh, "generate_analysis")
    [listed] = fresh.json("executions", "list")
    assert f"execution {listed['execution_id']} was left running: `govkernel recover`" in err
    assert fresh.json("recover")["resumed"][0]["state"] == "succeeded"
    assert len(fresh.json("executions", "list")) == 1


@pytest.mark.parametrize("slow_step", ["read_sources", "ingest", "generate_analysis"])
def test_a_run_interrupted_under_json_names_its_execution_in_json(
    fresh: Cli, slow_step: str
) -> None:
    """Stdout was empty: a CI job stopped by its timeout could learn which execution to
    follow up only from stderr's words (found by a JSON consumer's pass)."""
    said = _interrupted_run(fresh, slow_step, "--json")
    document = json.loads(said[said.index("{") :])
    assert document["interrupted"] == "terminated"
    if slow_step == "read_sources":  # before anything was started: a record all the same
        assert document["execution_id"] is document["state"] is document["idempotency_key"]
        assert document["idempotency_key"] is None and document["left"] == "nothing was started"
    elif slow_step == "ingest":  # before the start was stored: the key that starts it
        assert document["execution_id"] is None and document["state"] is None
        assert f"--idempotency-key {document['idempotency_key']}" in document["left"]
    else:
        [listed] = fresh.json("executions", "list")
        assert (document["execution_id"], document["state"]) == (listed["execution_id"], "running")


def _die_holding(store_url: str) -> int:
    """A process that opens the store and is SIGKILLed while holding it: its pid."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from adapters.surrealdb import SurrealConfig, SurrealStore\n"
            f"SurrealStore(SurrealConfig({store_url!r}))\n"
            "print('open', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "open"
    child.kill()
    child.wait(timeout=10)
    return child.pid


def test_recover_after_a_crash_verifies_every_chain(fresh: Cli) -> None:
    xid = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    assert "not closed cleanly" not in fresh("recover").stdout  # a clean close is no crash

    _die_holding(fresh.url)
    fresh("executions", "list")  # another command first: the crash is not forgotten
    done = fresh("recover")
    assert "the store was not closed cleanly" in done.stdout
    assert "every audit chain intact" in done.stdout
    lines = done.stdout.splitlines()  # said before what it found, as done: before resuming
    assert lines.index("every audit chain intact") < lines.index("nothing to recover")
    assert "not closed cleanly" not in fresh("recover").stdout  # checked once is enough

    # A crash that left a chain broken (simulated by editing an entry) fails the recovery.
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows(
            "UPDATE $r SET reason = $reason",
            {"r": RecordID("audit", audit_key(xid, 2)), "reason": "torn"},
        )
    pid = _die_holding(fresh.url)
    done = fresh("recover", code=1)
    assert f"broken after the crash, first {xid}" in done.stderr
    reported = fresh.json("recover", code=1)  # and --json says which, not only the exit
    assert [r["execution_id"] for r in reported["broken_after_crash"]] == [xid]
    assert reported["broken_after_crash_in_other_tenants"] == 0
    assert reported["unclean_shutdown"] == {"pid": pid}  # a number, as JSON has them
    lock = Path(fresh.url.removeprefix("surrealkv://") + ".lock")
    lock.write_text("garbled")  # a crash whose process the lock file no longer names
    assert fresh.json("recover", code=1)["unclean_shutdown"] == {"pid": None}


def test_publishing_the_same_content_again_says_nothing_new_was_published(fresh: Cli) -> None:
    first = fresh("run", "knowledge-publication", str(FRED), "--publication-id", "p-1")
    assert "published already" not in first.stdout
    again = fresh(
        "run", "knowledge-publication", str(FRED), "--publication-id", "p-1", "--title", "Other"
    )
    assert "succeeded: capsule cap-" in again.stdout
    assert "publication p-1 was published already with this content" in again.stdout


def test_what_a_crash_left_running_is_shown_with_a_note_until_recovered(fresh: Cli) -> None:
    _crashed_start(fresh, "left-1")
    [xid] = _running(fresh)
    assert "died holding it" not in fresh("executions", "list").stderr  # a clean close
    _die_holding(fresh.url)
    for command in (("executions", "list"), ("executions", "show", xid)):
        note = fresh(*command).stderr
        assert "note: the last process on this store (pid " in note
        assert "what it left unfinished resumes with `govkernel" in note and "recover`" in note
    fresh("recover")
    assert "died holding it" not in fresh("executions", "show", xid).stderr
    # One waiting for people is not left unfinished by a crash: recover has nothing to do.
    waiting = fresh.json(
        "run", "knowledge-publication", str(IMF), "--publication-id", "left-2", "--tier", "Tier1"
    )
    assert waiting["state"] == "awaiting_approval"
    _die_holding(fresh.url)
    assert "died holding it" not in fresh("executions", "show", waiting["execution_id"]).stderr


def test_after_a_crash_every_tenants_chains_are_checked_before_it_is_forgotten(
    fresh: Cli,
) -> None:
    xid = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    with SurrealStore(SurrealConfig(fresh.url)) as store:  # tenant default's chain damaged
        store.select_rows(
            "UPDATE $r SET reason = $reason",
            {"r": RecordID("audit", audit_key(xid, 2)), "reason": "torn"},
        )
    _die_holding(fresh.url)
    other = fresh("recover", code=1, env={"GOVKERNEL_TENANT": "beta"})
    assert "1 audit chain(s) broken after the crash (1 in other tenants)" in other.stderr
    assert xid not in other.stderr  # another tenant's execution is counted, not named
    ours = fresh("recover", code=1)  # the crash was not forgotten: still checked
    assert f"broken after the crash, first {xid}" in ours.stderr


def test_a_store_path_through_a_file_says_so(fresh: Cli, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    url = f"surrealkv://{tmp_path / 'afile' / 'sub' / 'store'}"
    for command in (("run", "knowledge-publication", str(FRED)), ("executions", "list")):
        done = fresh("--store", url, *command, code=2)  # a read said "nothing has run there"
        assert f"{tmp_path / 'afile'} is a file, not a directory" in done.stderr


def test_a_store_path_inside_another_store_is_refused_and_that_store_still_opens(
    fresh: Cli,
) -> None:
    """Before, `--store surrealkv://prod/clog` (a slip of tab-completion) ran, exit 0, and
    made a store inside prod's own log directory: prod never opened again."""
    fresh("run", "knowledge-publication", str(FRED))
    for inside in ("clog", "manifest", "clog/deeper"):
        url = f"surrealkv://{fresh.store / inside}"
        done = fresh("--store", url, "run", "knowledge-publication", str(FRED), code=2)
        assert f"it lies inside the store at {fresh.store}" in done.stderr
    assert not (fresh.store / "clog" / "clog").exists()
    assert not (fresh.store / "clog.lock").exists()
    listed = json.loads(fresh("--json", "executions", "list").stdout)
    assert len(listed) == 1 and listed[0]["state"] == "succeeded"


def test_a_store_that_is_there_opens_wherever_it_lies(fresh: Cli) -> None:
    """Only a store to be made is refused inside another: the review found a store made in
    the parent of an existing one (a slip the other way) locking that one out."""
    inner = Cli(fresh.store / "inner", fresh.cwd)
    inner("run", "knowledge-publication", str(FRED))
    fresh("run", "knowledge-publication", str(FRED))  # a store around it, made afterwards
    assert len(inner.json("executions", "list")) == 1
    assert len(fresh.json("executions", "list")) == 1


def test_a_second_process_on_one_store_fails_clearly(fresh: Cli) -> None:
    with SurrealStore(SurrealConfig(fresh.url)):  # this test process holds the lock
        # 75 (sysexits' EX_TEMPFAIL), not a usage error's 2: a script may try it again.
        done = fresh("executions", "list", code=75)
        run = fresh("run", "knowledge-publication", str(FRED), code=75)
    assert "in use by another process" in done.stderr
    assert "try again once it is done" in done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert done.stdout == ""
    assert run.stderr.rstrip().endswith("or choose another store; nothing was started")


@pytest.fixture
def script() -> Iterator[Path]:
    if not SCRIPT.exists():
        pytest.skip("the govkernel console script is not installed in this environment")
    yield SCRIPT


def test_demo_through_the_console_script_twice(script: Path, tmp_path: Path) -> None:
    url = f"surrealkv://{tmp_path / 'demo-store'}"
    first = subprocess.run(
        [str(script), "--store", url, "demo"],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert first.returncode == 0, first.stderr
    assert "3 sources (3 new, 0 already known)" in first.stdout
    assert "every chain intact" in first.stdout
    second = subprocess.run(
        [str(script), "--store", url, "demo", "--json"],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["execution"]["state"] == "succeeded"
    assert summary["executions"] == 2 and summary["verification"]["ok"]
    # As `audit verify --json` says it: a report for each execution.
    verified = json.loads(
        subprocess.run(
            [str(script), "--store", url, "audit", "verify", "--json"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    )
    assert summary["verification"].keys() == verified.keys()
    assert len(summary["verification"]["reports"]) == 2
    assert summary["events"]["appended"] == 1  # sources and analysis were already known
    assert "0 new, 3 already known" in second.stderr  # human output moved off stdout


def test_another_tenant_sees_nothing_of_ours(fresh: Cli) -> None:
    xid = fresh.json("run", "knowledge-publication", str(FRED))["execution_id"]
    beta = {"GOVKERNEL_TENANT": "beta"}
    assert fresh("executions", "list", "--json", env=beta).stdout.strip() == "[]"
    assert fresh("events", "--json", env=beta).stdout.strip() == "[]"
    for args in (("executions", "show", xid), ("audit", "verify", xid)):
        # The tenant named: a GOVKERNEL_TENANT left out would read as an empty store.
        assert f"no execution {xid!r} in tenant 'beta'\n" in fresh(*args, code=2, env=beta).stderr
    assert fresh("executions", "list", env=beta).stdout == "no executions in tenant 'beta'\n"
    assert "no executions" not in fresh("executions", "list").stdout  # ours still are


@pytest.mark.parametrize(
    "args",
    [
        ("executions", "list"),
        ("executions", "show", "wfx-1"),
        ("audit", "verify"),
        ("events",),
        ("recover",),
        ("approve", "wfx-1", "--role", "reviewer", "--approver", "alice"),
        ("cancel", "wfx-1"),
    ],
)
def test_a_mistyped_store_path_is_reported_not_created(gk: Cli, args: tuple[str, ...]) -> None:
    typo = gk.cwd / "no-such-store"
    done = gk("--store", f"surrealkv://{typo}", *args, code=2, store=False)
    assert f"no store at {typo}" in done.stderr
    assert "a store elsewhere: --store or GOVKERNEL_STORE" in done.stderr  # what to do
    assert not typo.exists()


def test_an_existing_directory_that_holds_no_store_is_left_untouched(gk: Cli) -> None:
    folder = gk.cwd / "just-a-folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    done = gk("--store", f"surrealkv://{folder}", "executions", "list", code=2, store=False)
    assert f"no store at {folder}" in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert not folder.with_name("just-a-folder.lock").exists()


def test_a_mistyped_database_is_reported_not_created(gk: Cli) -> None:
    gk("run", "knowledge-publication", str(FRED))  # something has run on the store itself
    typo = {"GOVKERNEL_SURREAL_DATABASE": "typo"}
    done = gk("executions", "list", env=typo, code=2)
    assert "no store in namespace 'govkernel', database 'typo'" in done.stderr
    gk("run", "knowledge-publication", str(FRED), env=typo)  # running there creates it
    assert gk.json("executions", "list", env=typo)


def test_a_store_upgraded_by_any_command_says_so(fresh: Cli) -> None:
    """Even a read moves an older store's schema up, after which older govkernels refuse it:
    the operator is told when it happens (found upgrading stores of earlier versions)."""
    from adapters.surrealdb import schema

    fresh("run", "knowledge-publication", str(IMF))
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        meta = RecordID(schema.META_TABLE, "schema")
        store.select_rows("UPSERT $m SET version = $v", {"m": meta, "v": schema.SCHEMA_VERSION - 1})
    said = fresh("events", "--limit", "1").stderr
    assert f"upgraded from schema version {schema.SCHEMA_VERSION - 1}" in said
    assert "no longer opens it" in said
    assert "upgraded" not in fresh("events", "--limit", "1").stderr  # once
    assert fresh.json("recover")["upgraded_from"] is None
    with SurrealStore(SurrealConfig(fresh.url)) as store:
        store.select_rows("UPSERT $m SET version = 8", {"m": meta})
    assert fresh.json("recover")["upgraded_from"] == 8  # for automation too


def test_an_execution_is_driven_only_in_the_environment_it_started_in(fresh: Cli) -> None:
    prod = {"GOVKERNEL_ENVIRONMENT": "production"}
    record = fresh.json("run", "knowledge-publication", str(IMF), "--tier", "Tier1", env=prod)
    xid = record["execution_id"]
    assert record["environment"] == "production"
    alice = {"GOVKERNEL_ACTOR": "alice"}
    refused = fresh("approve", xid, "--role", "reviewer", code=1, env=alice)  # development
    assert "was started in production" in refused.stderr
    assert "GOVKERNEL_ENVIRONMENT=production for this command" in refused.stderr
    assert fresh.json("executions", "show", xid)["state"] == "awaiting_approval"
    done = fresh.json("approve", xid, "--role", "reviewer", env=alice | prod)
    assert done["state"] == "succeeded"
    assert "environment     production" in fresh("executions", "show", xid).stdout
    [listed] = [line for line in fresh("executions", "list").stdout.splitlines() if xid in line]
    assert " production " in listed

    settings = load_settings({"GOVKERNEL_STORE": fresh.url} | prod)
    request = publication_request(
        [read_source(FRED)], title="T", publication_id="p", policy_refs=["P"]
    )
    with build_app(settings) as app:
        pending = app.orchestrator.start(kp.NAME, request.to_input(), run=False).id
    left = fresh.json("recover")  # development's: another environment's is not a failure
    assert left["left_to_other_environments"] == [
        {"execution_id": pending, "environment": "production"}
    ]
    assert left["failed"] == [] and left["resumed"] == []
    said = fresh("recover").stdout
    assert "1 execution left alone: started in production" in said
    assert "GOVKERNEL_ENVIRONMENT=production recovers them" in said
    [resumed] = fresh.json("recover", env=prod)["resumed"]
    assert (resumed["execution_id"], resumed["state"]) == (pending, "succeeded")


def test_the_command_group_is_there_to_embed() -> None:
    """`composition.cli.cli`, the click group, as before the command line became a package
    (found by a review): click's CliRunner, or a service's own group, can take it."""
    from click.testing import CliRunner

    from composition.cli import cli as group

    done = CliRunner().invoke(group, ["--store", "memory://", "workflows"])
    assert done.exit_code == 0 and "knowledge_publication" in done.output


def test_executions_are_counted_by_state_workflow_and_tenant(fresh: Cli) -> None:
    fresh("run", "knowledge-publication", str(FRED))
    fresh("run", "knowledge-publication", str(IMF), "--tier", "Tier1", code=0)  # waits
    fresh("run", "knowledge-publication", str(BIS), env={"GOVKERNEL_TENANT": "other"})
    counted = fresh.json("executions", "count")
    assert counted["tenant"] == "default" and counted["total"] == 2
    assert counted["counts"] == {
        state.value: {"succeeded": 1, "awaiting_approval": 1}.get(state.value, 0)
        for state in ExecutionState
    }
    listed = fresh.json("executions", "list", "--state", "awaiting_approval")
    assert len(listed) == counted["counts"]["awaiting_approval"]
    assert fresh.json("executions", "count", env={"GOVKERNEL_TENANT": "other"})["total"] == 1
    table = fresh("executions", "count").stdout
    assert re.search(r"^succeeded +1$", table, re.M) and re.search(r"^total +2$", table, re.M)
    one = fresh("executions", "count", "--state", "awaiting_approval").stdout
    assert one.startswith("1 execution in state awaiting_approval in tenant 'default'")
    by_workflow = fresh.json("executions", "count", "--workflow", "knowledge_publication")
    assert by_workflow["total"] == 2
    assert fresh.json("executions", "count", "--workflow", "nothing_such")["total"] == 0
    hint = fresh("executions", "count", "--workflow", "knowledge-publication").stdout
    assert "`run knowledge-publication` runs is named knowledge_publication" in hint
    fresh("executions", "count", "--state", "nowhere", code=2)


def test_a_run_watched_on_a_terminal_says_which_step_it_waits_for(fresh: Cli) -> None:
    """A long step printed nothing at all (ten seconds of silence for a large analyse,
    found by an operator's pass): on a terminal, a line says which step runs, the first one
    too. A line of its own: what the step prints goes on the next (a re-test found a status
    written over in place mixed with a step's own output)."""
    import pty

    leader, follower = pty.openpty()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from composition import cli\n"
            "from domain.services.knowledge import KnowledgeService\n"
            "analyse = KnowledgeService.generate_analysis\n"
            "def slow(*args, **kwargs):\n"
            "    print('the step says hello')\n"
            "    time.sleep(0.5)\n"
            "    return analyse(*args, **kwargs)\n"
            "KnowledgeService.generate_analysis = slow\n"
            f"sys.exit(cli.run_cli(['--store', {fresh.url!r}, 'run', 'knowledge-publication',"
            f" {str(FRED)!r}]))\n",
        ],
        stdout=follower,
        stderr=follower,
        env=clean_env(TERM="xterm"),
    )
    os.close(follower)
    seen = b""
    with contextlib.suppress(OSError):  # the terminal closes as the child ends
        while chunk := os.read(leader, 4096):
            seen += chunk
    os.close(leader)
    assert child.wait(timeout=60) == 0
    lines = seen.decode().splitlines()
    assert "\x1b" not in "".join(lines)  # no cursor codes: nothing written over
    for step in ("ingest", "analyse"):
        shown = lines.index(f"  ... {step} running")
        assert any(f"step {step} completed" in line for line in lines[shown + 1 :])
    assert "the step says hello" in lines  # a line of its own
