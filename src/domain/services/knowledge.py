"""The three governed mutations (and the retraction that compensates publication).

Each stages its domain record(s), evidence manifest and event in the caller's unit of work,
so they commit together or not at all; the caller (a service facade or a workflow step)
owns the commit. Denials are recorded by the gate in a unit of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen

from domain.model import analysis as analysis_model
from domain.model import capsule as capsule_model
from domain.model.analysis import Analysis
from domain.model.capsule import Capsule, CapsuleStatus
from domain.model.errors import AlreadyPublished, InvalidInput, UnknownReference
from domain.model.evidence import EventEnvelope, EventType, EvidenceManifest
from domain.model.knowledge import Classification, KnowledgeSource, SourceDraft
from domain.model.policy import Action, EnforcementContext, GuardedMutation, PolicyDecision
from domain.model.runtime import RuntimeContext
from domain.model.validation import identifier, instance_of, listed, text
from domain.services.governance import Gate, evidence_for
from ports.errors import CorruptRecord
from ports.unit_of_work import UnitOfWork

WORKFLOW = "knowledge_publication"
MAX_BATCH = 100


@frozen
class IngestResult:
    sources: tuple[KnowledgeSource, ...]
    created: tuple[str, ...]  # ids of the sources this call created (the rest already existed)
    evidence_ids: tuple[str, ...] = ()  # the evidence manifests this call recorded for them


@frozen
class Publication:
    capsule: Capsule
    # False when the same publication was already there: this call published nothing, so
    # whoever made it must not undo it either.
    created: bool


class KnowledgeService:
    def __init__(self, gate: Gate, *, retention_class: str = "standard") -> None:
        self._gate = gate
        self._retention = retention_class

    # -- ingestion -------------------------------------------------------------------------

    def ingest(
        self,
        uow: UnitOfWork,
        runtime: RuntimeContext,
        enforcement: EnforcementContext,
        drafts: Sequence[SourceDraft],
    ) -> IngestResult:
        drafts = listed("sources", drafts, instance_of(SourceDraft))
        if not drafts:
            raise InvalidInput("sources", "at least one source is required")
        if len(drafts) > MAX_BATCH:
            raise InvalidInput("sources", f"at most {MAX_BATCH} sources per batch")
        existing: dict[int, KnowledgeSource] = {}
        for i, draft in enumerate(drafts):
            found = uow.sources.find_identical(
                runtime.tenant, draft.source_url, draft.content_digest
            )
            if found is not None:
                existing[i] = found
        decision = self._gate.decide(
            GuardedMutation(
                action=Action.INGEST_SOURCES,
                workflow=WORKFLOW,
                target=f"knowledge_source:batch of {len(drafts)}",
                classification=max((d.classification for d in drafts), key=lambda c: c.rank),
                context=enforcement,
                source_urls=tuple((d.kind, d.source_url) for d in drafts),
            ),
            runtime,
            uow,
        )
        sources: list[KnowledgeSource] = []
        created: list[str] = []
        evidence: list[str] = []
        seen: dict[tuple[str, str], KnowledgeSource] = {}
        for i, draft in enumerate(drafts):
            same = existing.get(i) or seen.get((draft.source_url, draft.content_digest))
            if same is not None:
                sources.append(same)
                continue
            source = KnowledgeSource.acquire(
                draft,
                source_id=runtime.ids.new_id("src"),
                tenant=runtime.tenant,
                acquired_at=runtime.clock.now(),
            )
            seen[(draft.source_url, draft.content_digest)] = source
            uow.sources.add(source)
            manifest = self._record(
                uow,
                runtime,
                decision,
                subject=f"knowledge_source:{source.id}",
                artifact_hash=source.content_digest,
                classification=source.classification,
                event_type=EventType.SOURCE_INGESTED,
                payload={
                    "source_id": source.id,
                    "kind": source.kind.value,
                    "source_url": source.source_url,
                    "content_digest": source.content_digest,
                    "evidence_use": source.evidence_use.value,
                },
            )
            sources.append(source)
            created.append(source.id)
            evidence.append(manifest.id)
        if created:
            uow.decisions.add(decision)
        return IngestResult(tuple(sources), tuple(created), tuple(evidence))

    # -- analysis ----------------------------------------------------------------------------

    def generate_analysis(
        self,
        uow: UnitOfWork,
        runtime: RuntimeContext,
        enforcement: EnforcementContext,
        source_ids: Sequence[str],
    ) -> Analysis:
        sources = self._sources(uow, source_ids)
        digest = analysis_model.inputs_digest(sources)
        decision = self._gate.decide(
            GuardedMutation(
                action=Action.GENERATE_ANALYSIS,
                workflow=WORKFLOW,
                target=f"analysis:{digest[:16]}",
                classification=capsule_model.highest_classification(sources),
                context=enforcement,
                referenced_tenants=tuple(s.tenant for s in sources),
            ),
            runtime,
            uow,
        )
        # The generator is pure: identical inputs give the identical analysis, returned as is
        # (once it is seen to be that: one changed in storage would be published again).
        existing = uow.analyses.find_by_inputs(runtime.tenant, digest)
        if existing is not None:
            self._as_generated(existing, sources)
            return existing
        claims, terms, rendered = analysis_model.extract(sources)
        result = Analysis(
            id=runtime.ids.new_id("ana"),
            tenant=runtime.tenant,
            source_ids=tuple(sorted(s.id for s in sources)),
            claims=claims,
            key_terms=terms,
            rendered=rendered,
            generator_name=analysis_model.GENERATOR_NAME,
            generator_version=analysis_model.GENERATOR_VERSION,
            inputs_digest=digest,
            generated_at=runtime.clock.now(),
        )
        uow.analyses.add(result)
        uow.decisions.add(decision)
        self._record(
            uow,
            runtime,
            decision,
            subject=f"analysis:{result.id}",
            artifact_hash=digest,
            classification=capsule_model.highest_classification(sources),
            event_type=EventType.ANALYSIS_GENERATED,
            payload={
                "analysis_id": result.id,
                "source_ids": list(result.source_ids),
                "inputs_digest": digest,
                "claims": len(claims),
                "generator": f"{result.generator_name}/{result.generator_version}",
            },
        )
        return result

    # -- publication -------------------------------------------------------------------------

    def publish(
        self,
        uow: UnitOfWork,
        runtime: RuntimeContext,
        enforcement: EnforcementContext,
        *,
        publication_id: str,
        title: str,
        source_ids: Sequence[str],
        analysis_ids: Sequence[str] = (),
        evidence_ids: Sequence[str] = (),
    ) -> Publication:
        """Publish the sources (and analyses) as a capsule, under policy. `evidence_ids` may
        name manifests known to evidence some of the sources (an ingest's): those are read by
        id, and only the sources they do not cover are looked up by subject."""
        publication_id = identifier("publication_id", publication_id)
        title = text("title", title, max_len=500)
        sources = self._sources(uow, source_ids)
        analyses: list[Analysis] = []
        evidence_ids = listed("evidence_ids", evidence_ids, instance_of(str))
        by_id = {s.id: s for s in sources}
        for analysis_id in listed("analysis_ids", analysis_ids, instance_of(str)):
            found = uow.analyses.get(analysis_id)
            if found is None:
                raise UnknownReference("analysis", analysis_id)
            # A capsule cites it: it must be what its sources give, as a reused one must.
            cited = [by_id[i] for i in found.source_ids if i in by_id]
            if len(cited) != len(found.source_ids):
                cited = self._sources(uow, found.source_ids)
            self._as_generated(found, cited)
            analyses.append(found)
        artifact = capsule_model.artifact_hash(sources)
        existing = uow.capsules.by_publication(runtime.tenant, publication_id)
        if existing is not None:
            if existing.artifact_hash == artifact and existing.status is CapsuleStatus.PUBLISHED:
                # Exactly once: a repeat of the same publication is a no-op (the capsule seen
                # to be the one these sources make: not one changed in storage since).
                if not capsule_model.matches(existing, sources):
                    raise CorruptRecord(
                        f"stored capsule {existing.id!r} is not what its sources give: changed"
                        " in storage"
                    )
                return Publication(existing, created=False)
            retracted = existing.status is CapsuleStatus.RETRACTED
            raise AlreadyPublished(publication_id, existing.id, retracted=retracted)
        unevidenced = self._unevidenced(uow, runtime.tenant, sources, evidence_ids)
        classification = capsule_model.highest_classification(sources)
        decision = self._gate.decide(
            GuardedMutation(
                action=Action.PUBLISH_CAPSULE,
                workflow=WORKFLOW,
                target=f"capsule:{publication_id}",
                classification=classification,
                context=enforcement,
                referenced_tenants=tuple(s.tenant for s in sources)
                + tuple(a.tenant for a in analyses),
                sources_without_evidence=unevidenced,
                analysis_count=len(analyses),
            ),
            runtime,
            uow,
        )
        capsule = Capsule(
            id=runtime.ids.new_id("cap"),
            tenant=runtime.tenant,
            publication_id=publication_id,
            title=title,
            source_ids=tuple(sorted(s.id for s in sources)),
            analysis_ids=tuple(a.id for a in analyses),
            artifact_hash=artifact,
            chunks=capsule_model.chunk(sources),
            classification=classification,
            retention_class=self._retention,
            status=CapsuleStatus.PUBLISHED,
            published_at=runtime.clock.now(),
        )
        uow.capsules.add(capsule)
        uow.decisions.add(decision)
        self._record(
            uow,
            runtime,
            decision,
            subject=f"capsule:{capsule.id}",
            artifact_hash=artifact,
            classification=classification,
            event_type=EventType.CAPSULE_PUBLISHED,
            payload={
                "capsule_id": capsule.id,
                "publication_id": publication_id,
                "artifact_hash": artifact,
                "source_ids": list(capsule.source_ids),
                "analysis_ids": list(capsule.analysis_ids),
                "chunks": len(capsule.chunks),
            },
        )
        return Publication(capsule, created=True)

    def retract(
        self,
        uow: UnitOfWork,
        runtime: RuntimeContext,
        enforcement: EnforcementContext,
        *,
        capsule_id: str,
        reason: str,
    ) -> Capsule:
        """The compensation of publication: its own decision, evidence and event."""
        reason = text("reason", reason, max_len=1000)
        capsule = uow.capsules.get(capsule_id)
        if capsule is None or capsule.tenant != runtime.tenant:
            raise UnknownReference("capsule", capsule_id)
        if capsule.status is CapsuleStatus.RETRACTED:
            return capsule
        decision = self._gate.decide(
            GuardedMutation(
                action=Action.RETRACT_CAPSULE,
                workflow=WORKFLOW,
                target=f"capsule:{capsule.id}",
                classification=capsule.classification,
                context=enforcement,
                referenced_tenants=(capsule.tenant,),
            ),
            runtime,
            uow,
        )
        retracted = capsule.retract(at=runtime.clock.now(), reason=reason)
        uow.capsules.update(retracted)
        uow.decisions.add(decision)
        self._record(
            uow,
            runtime,
            decision,
            subject=f"capsule:{capsule.id}",
            artifact_hash=capsule.artifact_hash,
            classification=capsule.classification,
            event_type=EventType.CAPSULE_RETRACTED,
            payload={"capsule_id": capsule.id, "reason": reason},
        )
        return retracted

    # -- shared ------------------------------------------------------------------------------

    def _as_generated(self, analysis: Analysis, sources: Sequence[KnowledgeSource]) -> None:
        if not analysis_model.matches(analysis, sources):
            raise CorruptRecord(
                f"stored analysis {analysis.id!r} is not what its sources give: changed in"
                " storage (it is not built on)"
            )

    def _sources(self, uow: UnitOfWork, source_ids: Sequence[str]) -> list[KnowledgeSource]:
        source_ids = listed("source_ids", source_ids, instance_of(str))
        if not source_ids:
            raise InvalidInput("source_ids", "at least one source is required")
        wanted = list(dict.fromkeys(source_ids))
        found = uow.sources.get_many(wanted)
        for source_id in wanted:
            if source_id not in found:
                raise UnknownReference("knowledge source", source_id)
        return [found[source_id] for source_id in wanted]

    def _unevidenced(
        self,
        uow: UnitOfWork,
        tenant: str,
        sources: Sequence[KnowledgeSource],
        evidence_ids: Sequence[str],
    ) -> tuple[str, ...]:
        """The sources no evidence manifest of the tenant names as its subject. Manifests
        never change once recorded, so one named by id that reads back with the subject is
        proof enough; a wrong id proves nothing and costs only the look-up it would have."""
        subjects = [f"knowledge_source:{s.id}" for s in sources]
        named = uow.evidence.get_many(evidence_ids) if evidence_ids else {}
        evidenced = {m.subject for m in named.values() if m.tenant == tenant}
        rest = [subject for subject in subjects if subject not in evidenced]
        if rest:
            evidenced |= {m.subject for m in uow.evidence.for_subjects(tenant, rest)}
        return tuple(s.id for s in sources if f"knowledge_source:{s.id}" not in evidenced)

    def _record(
        self,
        uow: UnitOfWork,
        runtime: RuntimeContext,
        decision: PolicyDecision,
        *,
        subject: str,
        artifact_hash: str,
        classification: Classification,
        event_type: EventType,
        payload: dict[str, object],
    ) -> EvidenceManifest:
        manifest = evidence_for(
            decision,
            runtime,
            subject=subject,
            artifact_hash=artifact_hash,
            classification=classification,
            retention_class=self._retention,
        )
        uow.evidence.add(manifest)
        uow.events.append(
            EventEnvelope(
                id=runtime.ids.new_id("evt"),
                tenant=runtime.tenant,
                type=event_type,
                actor=runtime.actor,
                occurred_at=runtime.clock.now(),
                correlation_id=runtime.trace_id,
                causation_id=manifest.id,
                decision_ref=decision.id,
                classification=classification,
                payload=payload | {"evidence_id": manifest.id},
            ).sealed()
        )
        return manifest
