"""Every enforcement rule, on pure inputs: no store, no service, no clock but a datetime."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from attrs import evolve

from domain.model.environment import Environment
from domain.model.errors import InvalidInput
from domain.model.knowledge import Classification, SourceKind
from domain.model.policy import (
    APPROVAL_CLOCK_SKEW,
    APPROVAL_REASON,
    APPROVAL_TTL,
    DEFAULT_ALLOWLIST,
    SOCIAL_MEDIA_HOSTS,
    Action,
    Approval,
    EnforcementContext,
    GuardedMutation,
    ImpactTier,
    Obligation,
    PolicyDecision,
    SourceAllowlist,
    approvals,
    change_freeze,
    default_policies,
    evaluate,
    production_publication,
    requires_policy_refs,
    same_tenant,
    source_allowlist,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TENANT = "tenant-a"
ACTOR = "alice"


def context(
    *,
    tier: ImpactTier = ImpactTier.TIER0,
    policy_refs: Sequence[str] = ("pol-1",),
    required_roles: Sequence[str] = (),
    granted: Sequence[Approval] = (),
    freeze: bool = False,
    environment: Environment = Environment.DEVELOPMENT,
    actor: str = ACTOR,
) -> EnforcementContext:
    return EnforcementContext(
        actor=actor,
        tenant=TENANT,
        environment=environment,
        impact_tier=tier,
        policy_refs=tuple(policy_refs),
        required_approver_roles=tuple(required_roles),
        approvals=tuple(granted),
        change_freeze=freeze,
    )


def mutation(
    ctx: EnforcementContext | None = None,
    *,
    action: Action = Action.INGEST_SOURCES,
    source_urls: Sequence[tuple[SourceKind, str]] = (),
    referenced_tenants: Sequence[str] = (),
    sources_without_evidence: Sequence[str] = (),
    analysis_count: int = 0,
) -> GuardedMutation:
    return GuardedMutation(
        action=action,
        workflow="knowledge_publication",
        target="target:1",
        classification=Classification.INTERNAL,
        context=ctx or context(),
        source_urls=tuple(source_urls),
        referenced_tenants=tuple(referenced_tenants),
        sources_without_evidence=tuple(sources_without_evidence),
        analysis_count=analysis_count,
    )


def approval(approver: str, role: str = "risk", *, age: timedelta = timedelta(hours=1)) -> Approval:
    return Approval(approver=approver, role=role, granted_at=NOW - age)


def decide(m: GuardedMutation) -> PolicyDecision:
    return evaluate(m, decision_id="dec-1", now=NOW, policies=default_policies())


# -- policy refs ----------------------------------------------------------------------------


def test_policy_refs_are_required() -> None:
    reasons = requires_policy_refs(mutation(context(policy_refs=())), NOW)
    assert reasons == ["policy refs: at least one policy ref is required"]
    decision = decide(mutation(context(policy_refs=())))
    assert not decision.allowed
    assert decision.reasons == tuple(reasons)


def test_one_policy_ref_suffices() -> None:
    assert requires_policy_refs(mutation(context(policy_refs=("pol-1",))), NOW) == []
    decision = decide(mutation(context(policy_refs=("pol-1", "pol-2"))))
    assert decision.allowed
    assert decision.policy_refs == ("pol-1", "pol-2")


# -- change freeze --------------------------------------------------------------------------


def test_a_change_freeze_lets_tier0_through() -> None:
    assert change_freeze(mutation(context(tier=ImpactTier.TIER0, freeze=True)), NOW) == []
    assert decide(mutation(context(tier=ImpactTier.TIER0, freeze=True))).allowed


@pytest.mark.parametrize("tier", [ImpactTier.TIER1, ImpactTier.TIER2, ImpactTier.TIER3])
def test_a_change_freeze_blocks_every_other_tier(tier: ImpactTier) -> None:
    approved = [approval("bob"), approval("carol")]  # approvals cannot lift a freeze
    m = mutation(context(tier=tier, freeze=True, granted=approved))
    assert change_freeze(m, NOW) == [
        f"change freeze: only Tier0 mutations may run, this is {tier.value}"
    ]
    decision = decide(m)
    assert not decision.allowed
    assert not decision.awaits_approval


@pytest.mark.parametrize("tier", list(ImpactTier))
def test_without_a_freeze_no_tier_is_frozen(tier: ImpactTier) -> None:
    assert change_freeze(mutation(context(tier=tier, freeze=False)), NOW) == []


# -- approvals: counts per tier -------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "needed"),
    [(ImpactTier.TIER0, 0), (ImpactTier.TIER1, 1), (ImpactTier.TIER2, 2), (ImpactTier.TIER3, 2)],
)
def test_required_approvals_per_tier(tier: ImpactTier, needed: int) -> None:
    assert tier.required_approvals == needed


def test_tier0_needs_no_approval() -> None:
    assert approvals(mutation(context(tier=ImpactTier.TIER0)), NOW) == []
    decision = decide(mutation(context(tier=ImpactTier.TIER0)))
    assert decision.allowed
    assert decision.obligations == (Obligation.RECORD_EVIDENCE,)


def test_tier1_needs_one_approval() -> None:
    without = approvals(mutation(context(tier=ImpactTier.TIER1)), NOW)
    assert without == [f"{APPROVAL_REASON}Tier1 needs 1 distinct valid approvals, has 0"]
    m = mutation(context(tier=ImpactTier.TIER1, granted=[approval("bob")]))
    assert approvals(m, NOW) == []
    decision = decide(m)
    assert decision.allowed
    assert decision.obligations == (Obligation.RECORD_EVIDENCE, Obligation.REQUIRE_HUMAN_APPROVAL)


@pytest.mark.parametrize("tier", [ImpactTier.TIER2, ImpactTier.TIER3])
def test_tier2_and_tier3_need_two_distinct_approvers(tier: ImpactTier) -> None:
    one = mutation(context(tier=tier, granted=[approval("bob")]))
    assert approvals(one, NOW) == [
        f"{APPROVAL_REASON}{tier.value} needs 2 distinct valid approvals, has 1"
    ]
    same_twice = mutation(context(tier=tier, granted=[approval("bob"), approval("bob", "legal")]))
    assert approvals(same_twice, NOW) == [
        f"{APPROVAL_REASON}{tier.value} needs 2 distinct valid approvals, has 1"
    ]
    two = mutation(context(tier=tier, granted=[approval("bob"), approval("carol")]))
    assert approvals(two, NOW) == []
    assert decide(two).allowed


# -- approvals: roles -----------------------------------------------------------------------


def test_each_required_role_must_approve() -> None:
    ctx = context(
        tier=ImpactTier.TIER2,
        required_roles=("risk", "legal"),
        granted=[approval("bob", "risk"), approval("carol", "risk")],
    )
    assert approvals(mutation(ctx), NOW) == [
        f"{APPROVAL_REASON}role 'legal' has not approved (or approval expired)"
    ]
    both = evolve(ctx, approvals=(approval("bob", "risk"), approval("carol", "legal")))
    assert approvals(mutation(both), NOW) == []


@pytest.mark.parametrize(("required", "given"), [("Legal", "legal"), ("legal", "LEGAL")])
def test_a_required_role_is_met_whatever_case_either_is_written_in(
    required: str, given: str
) -> None:
    ctx = context(tier=ImpactTier.TIER1, required_roles=(required,))
    assert approvals(mutation(evolve(ctx, approvals=(approval("bob", given),))), NOW) == []


def test_every_missing_role_is_named() -> None:
    ctx = context(tier=ImpactTier.TIER1, required_roles=("risk", "legal", "compliance"))
    reasons = approvals(mutation(evolve(ctx, approvals=(approval("bob", "legal"),))), NOW)
    assert reasons == [
        f"{APPROVAL_REASON}role 'risk' has not approved (or approval expired)",
        f"{APPROVAL_REASON}role 'compliance' has not approved (or approval expired)",
    ]


def test_a_required_role_applies_even_at_tier0() -> None:
    reasons = approvals(mutation(context(tier=ImpactTier.TIER0, required_roles=("risk",))), NOW)
    assert reasons == [f"{APPROVAL_REASON}role 'risk' has not approved (or approval expired)"]


# -- approvals: expiry (24 h) ---------------------------------------------------------------


def test_approvals_live_for_24_hours() -> None:
    assert timedelta(hours=24) == APPROVAL_TTL


@pytest.mark.parametrize(
    ("age", "valid"),
    [
        (timedelta(0), True),
        (APPROVAL_TTL - timedelta(microseconds=1), True),
        (APPROVAL_TTL - timedelta(seconds=1), True),
        (APPROVAL_TTL, False),
        (APPROVAL_TTL + timedelta(microseconds=1), False),
        (APPROVAL_TTL + timedelta(seconds=1), False),
        # Granted ahead of this clock by another worker's: valid within the skew allowed.
        (-APPROVAL_CLOCK_SKEW, True),
        (-APPROVAL_CLOCK_SKEW - timedelta(microseconds=1), False),
    ],
)
def test_approval_expiry_boundary(age: timedelta, valid: bool) -> None:
    granted = approval("bob", "risk", age=age)
    assert granted.valid_at(NOW) is valid
    m = mutation(context(tier=ImpactTier.TIER1, required_roles=("risk",), granted=[granted]))
    assert (approvals(m, NOW) == []) is valid
    decision = decide(m)
    assert decision.allowed is valid
    assert decision.approvals == ((granted,) if valid else ())


def test_an_expired_role_approval_is_reported_as_missing() -> None:
    ctx = context(
        tier=ImpactTier.TIER1,
        required_roles=("legal",),
        granted=[approval("bob", "risk"), approval("carol", "legal", age=APPROVAL_TTL)],
    )
    assert approvals(mutation(ctx), NOW) == [
        f"{APPROVAL_REASON}role 'legal' has not approved (or approval expired)"
    ]


# -- approvals: separation of duties --------------------------------------------------------


def test_self_approval_does_not_count() -> None:
    m = mutation(context(tier=ImpactTier.TIER1, granted=[approval(ACTOR)]))
    assert approvals(m, NOW) == [f"{APPROVAL_REASON}Tier1 needs 1 distinct valid approvals, has 0"]
    assert not decide(m).allowed


def test_self_approval_does_not_fill_a_role_nor_a_second_approver() -> None:
    ctx = context(
        tier=ImpactTier.TIER2,
        required_roles=("legal",),
        granted=[approval("bob", "risk"), approval(ACTOR, "legal")],
    )
    assert approvals(mutation(ctx), NOW) == [
        f"{APPROVAL_REASON}Tier2 needs 2 distinct valid approvals, has 1",
        f"{APPROVAL_REASON}role 'legal' has not approved (or approval expired)",
    ]


@pytest.mark.parametrize(
    "look_alike",
    [
        "alice\u200b",
        " alice",
        "alice\n",
        "\uff41\uff4c\uff49\uff43\uff45",
        "ALICE",
        "alice\u3164",  # a Hangul filler: a letter that shows as nothing
        "alice\u2800",  # the blank braille cell
    ],
)
def test_a_name_spelled_to_look_like_the_requester_is_the_requester(look_alike: str) -> None:
    """Services hand the policies approvals of their own, not held to the command line's
    ASCII names: invisible characters, spaces and full-width letters tell no one apart."""
    m = mutation(context(tier=ImpactTier.TIER1, granted=[approval(look_alike)]))
    assert approvals(m, NOW) == [f"{APPROVAL_REASON}Tier1 needs 1 distinct valid approvals, has 0"]
    twice = context(tier=ImpactTier.TIER2, granted=[approval("bob"), approval("bob\u200d")])
    assert approvals(mutation(twice), NOW) == [
        f"{APPROVAL_REASON}Tier2 needs 2 distinct valid approvals, has 1"
    ]
    assert not approvals(mutation(context(tier=ImpactTier.TIER1, granted=[approval("bob")])), NOW)


# -- source URL allowlist -------------------------------------------------------------------

ALLOWLIST = SourceAllowlist()


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        (SourceKind.IMF, "https://imf.org/en/Publications"),
        (SourceKind.IMF, "https://www.imf.org/en/Publications"),
        (SourceKind.IMF, "https://data.imf.org/regular.aspx?key=1"),
        (SourceKind.IMF, "https://WWW.IMF.ORG./x"),  # case and the root dot do not matter
        (SourceKind.IMF, "https://www.imf.org:443/x"),
        (SourceKind.BIS, "https://www.bis.org/publ/arpdf.htm"),
        (SourceKind.FSB, "https://www.fsb.org/work-of-the-fsb/"),
        (SourceKind.WORLD_BANK, "https://data.worldbank.org/indicator"),
        (SourceKind.FRED, "https://fred.stlouisfed.org/series/CPIAUCSL"),
        (SourceKind.OFFICIAL_DOCUMENT, "https://www.federalreserve.gov/monetarypolicy.htm"),
        (SourceKind.OFFICIAL_DOCUMENT, "https://www.ecb.europa.eu/press"),
        (SourceKind.OFFICIAL_DOCUMENT, "https://www.gov.uk/government/statistics"),
        (SourceKind.RESEARCH_PAPER, "https://arxiv.org/abs/2401.00001"),
        (SourceKind.RESEARCH_PAPER, "https://economics.mit.edu/paper.pdf"),
        (SourceKind.SECONDARY_CONTEXT, "https://news.example.com/story"),
        (SourceKind.SECONDARY_CONTEXT, "http://blog.example.org/post"),
    ],
)
def test_allowlisted_hosts_and_their_subdomains_are_permitted(kind: SourceKind, url: str) -> None:
    assert ALLOWLIST.permits(kind, url)
    assert source_allowlist(ALLOWLIST)(mutation(source_urls=[(kind, url)]), NOW) == []


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        (SourceKind.IMF, "https://imf.org.evil.com/report"),  # look-alike: allowed name as prefix
        (SourceKind.IMF, "https://evilimf.org/report"),  # suffix without a dot boundary
        (SourceKind.IMF, "https://imf.org@evil.com/report"),  # userinfo trick: host is evil.com
        (SourceKind.IMF, "https://evil.com\\@www.imf.org/x"),  # browsers go to evil.com
        (SourceKind.IMF, "https://user:pw@www.imf.org/x"),  # credentials serve no source
        (SourceKind.IMF, "https://[v1.imf.org]/x"),  # Python's host: v1.imf.org
        (SourceKind.IMF, "https://[fe80::1%eth0.imf.org]/"),  # a zone id, not a host
        (SourceKind.IMF, "https://www.bis.org/publ"),  # allowed host, but for another kind
        (SourceKind.BIS, "https://www.imf.org/en"),
        (SourceKind.FRED, "https://stlouisfed.org.example.net/series"),
        (SourceKind.OFFICIAL_DOCUMENT, "https://gov.example.com/doc"),
        (SourceKind.RESEARCH_PAPER, "https://arxiv.org.mirror.io/abs/1"),
        (SourceKind.WORLD_BANK, "https://worldbank.org-data.com/x"),
    ],
)
def test_hosts_outside_the_kind_allowlist_are_denied(kind: SourceKind, url: str) -> None:
    assert not ALLOWLIST.permits(kind, url)
    reasons = source_allowlist(ALLOWLIST)(mutation(source_urls=[(kind, url)]), NOW)
    said = f"source url: {url!r} is not allowed for kind {kind.value}{ALLOWLIST.said(kind)}"
    assert reasons == [said] and said.endswith(")")


@pytest.mark.parametrize(
    "url",
    [
        "https://twitter.com/imf/status/1",
        "https://x.com/imfnews",
        "https://www.facebook.com/imf",
        "https://m.facebook.com/imf",
        "https://www.reddit.com/r/economics",
        "https://www.youtube.com/watch?v=1",
        "https://youtu.be/abc",
        "https://t.me/channel",
        "https://bsky.app/profile/imf",
        "https://WWW.LINKEDIN.COM./company/imf",
    ],
)
def test_social_media_is_denied_for_every_kind_even_secondary_context(url: str) -> None:
    for kind in SourceKind:
        assert not ALLOWLIST.permits(kind, url), (kind, url)
    reasons = source_allowlist(ALLOWLIST)(
        mutation(source_urls=[(SourceKind.SECONDARY_CONTEXT, url)]), NOW
    )
    assert reasons == [
        f"source url: {url!r} is not allowed for kind secondary_context (any host but social media)"
    ]


def test_social_media_stays_denied_even_if_an_allowlist_names_it() -> None:
    lax = SourceAllowlist({SourceKind.RESEARCH_PAPER: ("twitter.com", "arxiv.org")})
    assert lax.permits(SourceKind.RESEARCH_PAPER, "https://arxiv.org/abs/1")
    assert not lax.permits(SourceKind.RESEARCH_PAPER, "https://twitter.com/paper")
    assert not lax.permits(SourceKind.IMF, "https://www.imf.org/x")  # kind absent: nothing


@pytest.mark.parametrize(
    ("hosts", "named", "problem"),
    [
        ({"imf": ("imf.org",)}, "hosts", "'imf' is not a SourceKind"),
        ({SourceKind.IMF: "imf.org"}, "hosts[imf]", "must be a tuple of host suffixes"),
        ({SourceKind.IMF: ("imf.org", "")}, "hosts[imf]", "'' is not a host suffix"),
        ({SourceKind.IMF: (None,)}, "hosts[imf]", "None is not a host suffix"),
        ({SourceKind.IMF: ("imf.org:443",)}, "hosts[imf]", "'imf.org:443' is not a host suffix"),
        ({SourceKind.IMF: ("https://imf.org",)}, "hosts[imf]", "is not a host suffix"),
        ({SourceKind.IMF: ("*.imf.org",)}, "hosts[imf]", "is not a host suffix"),
        ({SourceKind.IMF: ("imf.org/en",)}, "hosts[imf]", "is not a host suffix"),
        ({SourceKind.IMF: ("imf.org\xa0",)}, "hosts[imf]", "is not a host suffix"),
        ({SourceKind.IMF: ("münchen.de",)}, "hosts[imf]", "in its xn-- form"),
        ({SourceKind.IMF: ("0.1",)}, "hosts[imf]", "is not a host suffix"),  # every x.x.0.1
        ([SourceKind.IMF], "hosts", "must map source kinds"),
    ],
)
def test_an_allowlist_that_would_deny_what_it_names_is_refused_as_built(
    hosts: object, named: str, problem: str
) -> None:
    """Each of these built, then denied every source of the kind: "no host"."""
    with pytest.raises(InvalidInput, match=problem) as refused:
        SourceAllowlist(hosts)  # type: ignore[arg-type]
    assert refused.value.field == named


def test_an_allowlists_suffixes_are_hosts_as_urls_name_them() -> None:
    given = SourceAllowlist({SourceKind.IMF: ["IMF.org."], SourceKind.FSB: {"xn--mnchen-3ya.de"}})
    assert given.hosts == {SourceKind.IMF: ("imf.org",), SourceKind.FSB: ("xn--mnchen-3ya.de",)}
    assert given.permits(SourceKind.IMF, "https://www.imf.org/x")
    for url in ("https://www.münchen.de/x", "https://www.xn--mnchen-3ya.de/x"):  # either form
        assert given.permits(SourceKind.FSB, url)


def test_every_kind_has_an_allowlist_entry_and_known_social_hosts() -> None:
    assert set(DEFAULT_ALLOWLIST) == set(SourceKind)
    assert {"twitter.com", "x.com", "facebook.com", "reddit.com"} <= SOCIAL_MEDIA_HOSTS


def test_every_disallowed_url_of_a_batch_is_named() -> None:
    urls = [
        (SourceKind.IMF, "https://www.imf.org/ok"),
        (SourceKind.IMF, "https://imf.org.evil.com/a"),
        (SourceKind.SECONDARY_CONTEXT, "https://x.com/b"),
    ]
    reasons = source_allowlist(ALLOWLIST)(mutation(source_urls=urls), NOW)
    assert reasons == [
        "source url: 'https://imf.org.evil.com/a' is not allowed for kind imf (hosts under"
        " imf.org)",
        "source url: 'https://x.com/b' is not allowed for kind secondary_context (any host but"
        " social media)",
    ]


# -- tenancy --------------------------------------------------------------------------------


def test_references_to_another_tenant_are_denied() -> None:
    m = mutation(referenced_tenants=[TENANT, "tenant-b", "tenant-c", "tenant-b"])
    assert same_tenant(m, NOW) == ["tenant: references records of another tenant (2)"]
    assert not decide(m).allowed


def test_references_within_the_tenant_pass() -> None:
    assert same_tenant(mutation(referenced_tenants=[TENANT, TENANT]), NOW) == []
    assert same_tenant(mutation(referenced_tenants=[]), NOW) == []


# -- production publication -----------------------------------------------------------------


def publication(
    environment: Environment, *, unevidenced: Sequence[str], analyses: int
) -> GuardedMutation:
    return mutation(
        context(environment=environment),
        action=Action.PUBLISH_CAPSULE,
        sources_without_evidence=unevidenced,
        analysis_count=analyses,
    )


def test_production_publication_needs_evidence_for_every_source_and_an_analysis() -> None:
    m = publication(Environment.PRODUCTION, unevidenced=["src-1", "src-2"], analyses=0)
    assert production_publication(m, NOW) == [
        "evidence: source src-1 carries no evidence",
        "evidence: source src-2 carries no evidence",
        "analysis: production publication needs at least one analysis",
    ]
    assert not decide(m).allowed


def test_production_publication_with_evidence_and_an_analysis_passes() -> None:
    m = publication(Environment.PRODUCTION, unevidenced=[], analyses=1)
    assert production_publication(m, NOW) == []
    assert decide(m).allowed


@pytest.mark.parametrize(
    "environment", [Environment.DEVELOPMENT, Environment.TEST, Environment.STAGING]
)
def test_the_same_facts_pass_outside_production(environment: Environment) -> None:
    m = publication(environment, unevidenced=["src-1"], analyses=0)
    assert production_publication(m, NOW) == []
    assert decide(m).allowed


@pytest.mark.parametrize("action", [a for a in Action if a is not Action.PUBLISH_CAPSULE])
def test_only_publication_is_held_to_the_production_rule(action: Action) -> None:
    m = mutation(
        context(environment=Environment.PRODUCTION),
        action=action,
        sources_without_evidence=["src-1"],
        analysis_count=0,
    )
    assert production_publication(m, NOW) == []


# -- the decision as a whole ----------------------------------------------------------------


def test_a_denial_lists_every_reason_at_once() -> None:
    ctx = context(
        tier=ImpactTier.TIER2,
        policy_refs=(),
        required_roles=("legal",),
        granted=[approval(ACTOR, "legal")],
        freeze=True,
        environment=Environment.PRODUCTION,
    )
    m = mutation(
        ctx,
        action=Action.PUBLISH_CAPSULE,
        source_urls=[(SourceKind.IMF, "https://imf.org.evil.com/x")],
        referenced_tenants=["tenant-b"],
        sources_without_evidence=["src-9"],
        analysis_count=0,
    )
    decision = decide(m)
    assert not decision.allowed
    assert decision.reasons == (
        "policy refs: at least one policy ref is required",
        "change freeze: only Tier0 mutations may run, this is Tier2",
        f"{APPROVAL_REASON}Tier2 needs 2 distinct valid approvals, has 0",
        f"{APPROVAL_REASON}role 'legal' has not approved (or approval expired)",
        "source url: 'https://imf.org.evil.com/x' is not allowed for kind imf (hosts under"
        " imf.org)",
        "tenant: references records of another tenant (1)",
        "evidence: source src-9 carries no evidence",
        "analysis: production publication needs at least one analysis",
    )
    assert not decision.awaits_approval


def test_awaits_approval_only_when_approvals_are_the_sole_reasons() -> None:
    only_approvals = decide(mutation(context(tier=ImpactTier.TIER2, required_roles=("legal",))))
    assert not only_approvals.allowed
    assert len(only_approvals.reasons) == 2
    assert only_approvals.awaits_approval

    with_refs_missing = decide(mutation(context(tier=ImpactTier.TIER2, policy_refs=())))
    assert not with_refs_missing.awaits_approval

    with_freeze = decide(mutation(context(tier=ImpactTier.TIER1, freeze=True)))
    assert not with_freeze.awaits_approval

    with_bad_url = decide(
        mutation(
            context(tier=ImpactTier.TIER1),
            source_urls=[(SourceKind.IMF, "https://x.com/a")],
        )
    )
    assert not with_bad_url.awaits_approval

    allowed = decide(mutation(context(tier=ImpactTier.TIER1, granted=[approval("bob")])))
    assert allowed.allowed
    assert not allowed.awaits_approval


def test_the_decision_carries_who_what_where_and_when() -> None:
    ctx = context(tier=ImpactTier.TIER1, granted=[approval("bob")], environment=Environment.STAGING)
    decision = evaluate(
        mutation(ctx, action=Action.GENERATE_ANALYSIS),
        decision_id="dec-42",
        now=NOW,
        policies=default_policies(),
    )
    assert (decision.id, decision.tenant, decision.actor) == ("dec-42", TENANT, ACTOR)
    assert decision.action is Action.GENERATE_ANALYSIS
    assert decision.workflow == "knowledge_publication"
    assert decision.target == "target:1"
    assert decision.environment is Environment.STAGING
    assert decision.impact_tier is ImpactTier.TIER1
    assert decision.decided_at == NOW
    assert decision.approvals == (approval("bob"),)


def test_no_policies_means_allowed_and_a_custom_allowlist_is_honoured() -> None:
    m = mutation(context(policy_refs=()))
    assert evaluate(m, decision_id="d", now=NOW, policies=()).allowed
    strict = SourceAllowlist({kind: () for kind in SourceKind})
    url_mutation = mutation(source_urls=[(SourceKind.IMF, "https://www.imf.org/x")])
    assert decide(url_mutation).allowed
    denied = evaluate(url_mutation, decision_id="d", now=NOW, policies=default_policies(strict))
    assert denied.reasons == (
        "source url: 'https://www.imf.org/x' is not allowed for kind imf (no host)",
    )


def test_names_folded_alike_by_casefold_stay_alike() -> None:
    """Telling people apart only ever grows more lenient than `casefold`, never less:
    a letter with an iota subscript folds to two letters."""
    from domain.model.validation import same_person

    assert same_person("\u1fb3lice", "\u03b1\u03b9lice")
    assert not same_person("bob", "alice") and not same_person("alice1", "alice")


def test_an_approval_granted_in_the_last_day_there_is_is_valid() -> None:
    end = datetime.max.replace(tzinfo=UTC)
    granted = Approval("bob", "risk", end - timedelta(hours=1))
    assert granted.valid_at(end) and not granted.valid_at(end - timedelta(hours=2))
    assert granted.valid_at(end - timedelta(hours=1) - APPROVAL_CLOCK_SKEW)


def _blogs(m: GuardedMutation, now: datetime) -> object:
    return "no sources from blogs"


def _nothing(m: GuardedMutation, now: datetime) -> object:
    return None


def _codes(m: GuardedMutation, now: datetime) -> object:
    return [404]


def _blank(m: GuardedMutation, now: datetime) -> object:
    return [" "]


def _broken(m: GuardedMutation, now: datetime) -> list[str]:
    raise IndexError("tuple index out of range")


@pytest.mark.parametrize(
    ("policy", "said"),
    [
        (_blogs, "policy _blogs returned str: a policy returns a list of reasons"),
        (_nothing, "policy _nothing returned NoneType: a policy returns a list of reasons"),
        (_codes, "policy _codes gave a reason that is int: each is text"),
        (_blank, "policy _blank gave a reason that is blank text: each is text"),
    ],
)
def test_a_team_policy_that_returns_no_list_of_reasons_is_named(policy: object, said: str) -> None:
    """Text was taken letter by letter as reasons to deny, a blank reason denied for nothing,
    and None or a number failed with a TypeError or AttributeError naming no policy (found
    by a library adopter's pass)."""
    with pytest.raises(TypeError) as refused:
        evaluate(
            mutation(),
            decision_id="dec-1",
            now=NOW,
            policies=[*default_policies(), policy],  # type: ignore[list-item]
        )
    assert str(refused.value).startswith(said)


def test_a_policy_that_raises_is_named_beside_its_own_error() -> None:
    """And in the line a failed step records (found by a re-test: the note was dropped)."""
    from domain.orchestration.orchestrator import describe

    with pytest.raises(IndexError) as raised:
        evaluate(mutation(), decision_id="dec-1", now=NOW, policies=[_broken])
    assert raised.value.__notes__ == ["raised by policy _broken"]
    assert describe(raised.value) == (
        "IndexError (raised by policy _broken): tuple index out of range"
    )


def test_a_policy_may_give_its_reasons_as_any_iterable_of_text() -> None:
    def generated(m: GuardedMutation, now: datetime) -> list[str]:
        return (r for r in ["custom: no"])  # type: ignore[return-value]

    decision = evaluate(mutation(), decision_id="dec-1", now=NOW, policies=[generated])
    assert decision.reasons == ("custom: no",) and not decision.allowed


class _Unreadable(Exception):
    @property
    def __notes__(self) -> list[str]:  # type: ignore[override]
        raise RuntimeError("notes unreadable")


class _Lying(str):
    def startswith(self, *args: object) -> bool:
        raise RuntimeError("a note that lies")


def test_an_errors_notes_that_cannot_be_read_leave_its_line_as_it_is() -> None:
    """Reading a step's error's notes raised, and the failure was never recorded: the
    execution stayed running under its worker's lease (found by a review)."""
    from domain.orchestration.orchestrator import describe

    assert describe(_Unreadable("boom")) == "_Unreadable: boom"
    lying = ValueError("boom")
    lying.add_note(_Lying("raised by policy x"))
    assert describe(lying) == "ValueError (raised by policy x): boom"  # read as plain text
    odd = ValueError("boom")
    odd.__notes__ = "raised by policy x"  # type: ignore[assignment]  # not a list
    assert describe(odd) == "ValueError: boom"
