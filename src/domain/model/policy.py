"""Enforcement: guarded mutation requests, pure policies and their typed decisions."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from attrs import field, frozen

from domain.model.environment import Environment
from domain.model.errors import InvalidInput
from domain.model.knowledge import Classification, SourceKind, host_problem
from domain.model.validation import person_key, same_person

APPROVAL_TTL = timedelta(hours=24)
# How far ahead of a worker's clock an approval recorded by another worker's may be and still
# count: workers' clocks differ, and an approval not yet valid to the one running the gate,
# while already given to the one refusing it again, left an execution waiting for a day.
APPROVAL_CLOCK_SKEW = timedelta(minutes=5)
# Bounds on what one mutation names: every decision and manifest records them all.
MAX_POLICY_REFS = 100
MAX_ROLES = 20
MAX_APPROVALS = 100


class ImpactTier(enum.Enum):
    TIER0 = "Tier0"
    TIER1 = "Tier1"
    TIER2 = "Tier2"
    TIER3 = "Tier3"

    @property
    def required_approvals(self) -> int:
        return {"Tier0": 0, "Tier1": 1}.get(self.value, 2)


class Action(enum.Enum):
    INGEST_SOURCES = "ingest_sources"
    GENERATE_ANALYSIS = "generate_analysis"
    PUBLISH_CAPSULE = "publish_capsule"
    RETRACT_CAPSULE = "retract_capsule"


class Obligation(enum.Enum):
    RECORD_EVIDENCE = "record_evidence"
    REQUIRE_HUMAN_APPROVAL = "require_human_approval"


@frozen
class Approval:
    approver: str
    role: str
    granted_at: datetime

    def valid_at(self, now: datetime) -> bool:
        # (Subtracted, not added: an approval granted in the last day there is has no end.)
        return -APPROVAL_CLOCK_SKEW <= now - self.granted_at < APPROVAL_TTL


@frozen
class EnforcementContext:
    """Who asks, where, at which risk, under which policies and with which approvals."""

    actor: str
    tenant: str
    environment: Environment
    impact_tier: ImpactTier
    roles: tuple[str, ...] = ()
    policy_refs: tuple[str, ...] = ()
    required_approver_roles: tuple[str, ...] = ()
    approvals: tuple[Approval, ...] = ()
    change_freeze: bool = False


@frozen
class GuardedMutation:
    """One mutation to be decided, with the facts the policies need (gathered by the service)."""

    action: Action
    workflow: str
    target: str
    classification: Classification
    context: EnforcementContext
    source_urls: tuple[tuple[SourceKind, str], ...] = ()
    referenced_tenants: tuple[str, ...] = ()
    sources_without_evidence: tuple[str, ...] = ()
    analysis_count: int = 0


@frozen
class PolicyDecision:
    id: str
    tenant: str
    action: Action
    workflow: str
    target: str
    actor: str
    environment: Environment
    impact_tier: ImpactTier
    allowed: bool
    reasons: tuple[str, ...]
    obligations: tuple[Obligation, ...]
    policy_refs: tuple[str, ...]
    approvals: tuple[Approval, ...]
    decided_at: datetime
    version: int = 1

    @property
    def awaits_approval(self) -> bool:
        """Denied only for want of approvals: more approvals can still allow it."""
        return not self.allowed and all(r.startswith(APPROVAL_REASON) for r in self.reasons)


APPROVAL_REASON = "approval: "

SOCIAL_MEDIA_HOSTS = frozenset(
    {
        "twitter.com", "x.com", "facebook.com", "fb.com", "instagram.com", "tiktok.com",
        "reddit.com", "linkedin.com", "youtube.com", "youtu.be", "t.me", "threads.net",
        "mastodon.social", "bsky.app", "weibo.com", "snapchat.com", "pinterest.com",
    }
)  # fmt: skip


def _allowlist(
    hosts: Mapping[SourceKind, Iterable[str] | None],
) -> dict[SourceKind, tuple[str, ...] | None]:
    """Checked as it is built: a kind given as text (`"imf"`) matched no source, and a
    suffix given as text (`"imf.org"`) was taken letter by letter, each denying every source
    of its kind as if it named no host."""
    if not isinstance(hosts, Mapping):
        raise InvalidInput("hosts", f"must map source kinds to host suffixes, got {hosts!r}")
    checked: dict[SourceKind, tuple[str, ...] | None] = {}
    for kind, suffixes in hosts.items():
        if not isinstance(kind, SourceKind):
            known = ", ".join(f"SourceKind.{k.name}" for k in SourceKind)
            raise InvalidInput("hosts", f"{kind!r} is not a SourceKind ({known})")
        if suffixes is None:
            checked[kind] = None
            continue
        if isinstance(suffixes, str) or not isinstance(suffixes, Iterable):
            raise InvalidInput(
                f"hosts[{kind.value}]",
                f"must be a tuple of host suffixes or None, got {suffixes!r}",
            )
        checked[kind] = tuple(_suffix(kind, suffix) for suffix in suffixes)
    return checked


# Labels as hosts have them (underscores too, which some names hold); the last one not all
# digits: a suffix `1` would allow every address ending in .1.
_HOST_SUFFIX = re.compile(r"([a-z0-9_-]+\.)*[a-z0-9_-]*[a-z_-][a-z0-9_-]*\Z")


def _suffix(kind: SourceKind, suffix: object) -> str:
    """A host suffix as URLs' hosts are compared with it: lower case, ASCII (an
    internationalised name in its `xn--` form), no dots at its ends. What no host can end in
    (a scheme, a port, a path, a wildcard, white space) is refused."""
    plain = suffix.lower().strip(".") if isinstance(suffix, str) else None
    if plain is None or not _HOST_SUFFIX.match(plain):
        raise InvalidInput(
            f"hosts[{kind.value}]",
            f"{suffix!r} is not a host suffix (such as imf.org, or gov: ASCII, an"
            " internationalised name in its xn-- form; no scheme, port, path, wildcard or"
            " address)",
        )
    return plain


def _ascii_host(host: str) -> str | None:
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


@frozen
class SourceAllowlist:
    """Host suffixes allowed per source kind; `None` means any host that is not social media."""

    hosts: Mapping[SourceKind, tuple[str, ...] | None] = field(
        factory=lambda: dict(DEFAULT_ALLOWLIST), converter=_allowlist
    )

    def said(self, kind: SourceKind) -> str:
        """What a refusal adds: the hosts the kind allows (a guess at them left a failed
        execution each time)."""
        allowed = self.hosts.get(kind, ())
        if allowed is None:
            return " (any host but social media)"
        hosts = ", ".join(allowed[:10]) + (", ..." if len(allowed) > 10 else "")
        return f" (hosts under {hosts})" if allowed else " (no host)"

    def permits(self, kind: SourceKind, url: str) -> bool:
        if host_problem(url) is not None:
            return False  # no host we can vouch for
        host = _ascii_host((urlsplit(url).hostname or "").lower().rstrip(".")) or ""
        if not host or _matches(host, tuple(SOCIAL_MEDIA_HOSTS)):
            return False
        allowed = self.hosts.get(kind, ())
        return True if allowed is None else _matches(host, allowed)


def _matches(host: str, suffixes: Sequence[str]) -> bool:
    return any(host == s or host.endswith("." + s) for s in suffixes)


DEFAULT_ALLOWLIST: Mapping[SourceKind, tuple[str, ...] | None] = {
    SourceKind.IMF: ("imf.org",),
    SourceKind.BIS: ("bis.org",),
    SourceKind.FSB: ("fsb.org",),
    SourceKind.WORLD_BANK: ("worldbank.org",),
    SourceKind.FRED: ("stlouisfed.org",),
    SourceKind.OFFICIAL_DOCUMENT: (
        "gov", "gov.uk", "europa.eu", "int", "federalreserve.gov", "bankofengland.co.uk",
        "ecb.int", "oecd.org", "un.org",
    ),
    SourceKind.RESEARCH_PAPER: ("arxiv.org", "ssrn.com", "nber.org", "doi.org", "edu", "ac.uk"),
    SourceKind.SECONDARY_CONTEXT: None,
}  # fmt: skip

Policy = Callable[[GuardedMutation, datetime], Sequence[str]]


def requires_policy_refs(m: GuardedMutation, now: datetime) -> list[str]:
    return [] if m.context.policy_refs else ["policy refs: at least one policy ref is required"]


def change_freeze(m: GuardedMutation, now: datetime) -> list[str]:
    if m.context.change_freeze and m.context.impact_tier is not ImpactTier.TIER0:
        return [
            f"change freeze: only Tier0 mutations may run, this is {m.context.impact_tier.value}"
        ]
    return []


def approvals(m: GuardedMutation, now: datetime) -> list[str]:
    ctx = m.context
    # Separation of duties: the requesting actor cannot approve their own mutation.
    valid = [a for a in ctx.approvals if a.valid_at(now) and not same_person(a.approver, ctx.actor)]
    reasons: list[str] = []
    needed = ctx.impact_tier.required_approvals
    approvers = {person_key(a.approver) for a in valid}
    if len(approvers) < needed:
        reasons.append(
            f"{APPROVAL_REASON}{ctx.impact_tier.value} needs {needed} distinct valid approvals,"
            f" has {len(approvers)}"
        )
    roles = {a.role.casefold() for a in valid}
    for role in ctx.required_approver_roles:
        if role.casefold() not in roles:
            reasons.append(f"{APPROVAL_REASON}role {role!r} has not approved (or approval expired)")
    return reasons


def source_allowlist(allowlist: SourceAllowlist) -> Policy:
    def policy(m: GuardedMutation, now: datetime) -> list[str]:
        return [
            f"source url: {url!r} is not allowed for kind {kind.value}{allowlist.said(kind)}"
            for kind, url in m.source_urls
            if not allowlist.permits(kind, url)
        ]

    return policy


def same_tenant(m: GuardedMutation, now: datetime) -> list[str]:
    foreign = sorted({t for t in m.referenced_tenants if t != m.context.tenant})
    return [f"tenant: references records of another tenant ({len(foreign)})"] if foreign else []


def production_publication(m: GuardedMutation, now: datetime) -> list[str]:
    if m.action is not Action.PUBLISH_CAPSULE or not m.context.environment.is_production:
        return []
    reasons = [f"evidence: source {s} carries no evidence" for s in m.sources_without_evidence]
    if m.analysis_count < 1:
        reasons.append("analysis: production publication needs at least one analysis")
    return reasons


def default_policies(allowlist: SourceAllowlist | None = None) -> tuple[Policy, ...]:
    return (
        requires_policy_refs,
        change_freeze,
        approvals,
        source_allowlist(allowlist or SourceAllowlist()),
        same_tenant,
        production_publication,
    )


def _reasons(policy: Policy, mutation: GuardedMutation, now: datetime) -> list[str]:
    """What `policy` says, held to being a list of reasons: its text was taken letter by
    letter as reasons, and None or a number failed far from the policy that gave it."""
    try:
        said = policy(mutation, now)
    except Exception as exc:
        exc.add_note(f"raised by policy {_name(policy)}")
        raise
    if isinstance(said, str | bytes | Mapping) or not isinstance(said, Iterable):
        raise TypeError(
            f"policy {_name(policy)} returned {type(said).__name__}: a policy returns a list"
            " of reasons to deny (text), empty to allow"
        )
    reasons = list(said)
    for reason in reasons:
        if not isinstance(reason, str) or not reason.strip():
            given = type(reason).__name__ if not isinstance(reason, str) else "blank text"
            raise TypeError(f"policy {_name(policy)} gave a reason that is {given}: each is text")
    return reasons


def _name(policy: Policy) -> str:
    # Worked out only when there is something to say: every mutation runs every policy.
    return getattr(policy, "__qualname__", None) or type(policy).__name__


def evaluate(
    mutation: GuardedMutation,
    *,
    decision_id: str,
    now: datetime,
    policies: Sequence[Policy],
) -> PolicyDecision:
    """Run every policy (no short-circuit, so a denial lists every reason at once)."""
    reasons = [reason for policy in policies for reason in _reasons(policy, mutation, now)]
    obligations = [Obligation.RECORD_EVIDENCE]
    if mutation.context.impact_tier.required_approvals:
        obligations.append(Obligation.REQUIRE_HUMAN_APPROVAL)
    ctx = mutation.context
    return PolicyDecision(
        id=decision_id,
        tenant=ctx.tenant,
        action=mutation.action,
        workflow=mutation.workflow,
        target=mutation.target,
        actor=ctx.actor,
        environment=ctx.environment,
        impact_tier=ctx.impact_tier,
        allowed=not reasons,
        reasons=tuple(reasons),
        obligations=tuple(obligations),
        policy_refs=ctx.policy_refs,
        approvals=tuple(
            a for a in ctx.approvals if a.valid_at(now) and not same_person(a.approver, ctx.actor)
        ),
        decided_at=now,
    )
