// Revisions' REST routes: impact, provision, rollback, the revision list, one revision, diffs,
// and the desired RuleSet of a workload.
import { AddressGroup, GroupRuleSet } from '@bulkhead/proto';
import { Type } from '@sinclair/typebox';
import { ControlPlaneError, type ErrorDetail } from '../errors.js';
import * as R from '../responses.js';
import { type Api, booleanField, Name, Time, unknownFields } from '../route-support.js';
import type { RevisionsService } from './service.js';

const RevisionParams = Type.Object({ n: Type.Integer({ minimum: 1 }) });

/** `{note, confirm?}` of provision and rollback: a revision always says why it exists. */
function provisionBody(body: unknown): { note: string; confirm: boolean } {
  const b = (body ?? {}) as { note?: unknown; confirm?: unknown };
  const details: ErrorDetail[] = unknownFields(b, ['note', 'confirm']);
  if (typeof b.note !== 'string' || b.note.trim() === '') {
    details.push({ path: 'note', message: 'is required: a non-empty string saying why' });
  }
  details.push(...booleanField(b.confirm, 'confirm'));
  if (typeof body !== 'object' || body === null || Array.isArray(body) || details.length > 0) {
    throw new ControlPlaneError('VALIDATION_FAILED', 'invalid body', {
      details: details.length > 0 ? details : [{ path: '', message: 'must be an object' }],
    });
  }
  return { note: b.note as string, confirm: b.confirm === true };
}

export function registerRevisionRoutes(app: Api, revisions: RevisionsService): void {
  app.post(
    '/v1/impact',
    {
      // Read-only, so viewers may ask (see the auth hook).
      config: { readOnly: true },
      // A bare POST asks about the draft.
      preValidation: async (req) => {
        if (req.body === undefined) req.body = {};
      },
      schema: {
        body: Type.Optional(
          Type.Object(
            {
              // 'draft' | {revision} | {resources}; checked by the engine, which names the field.
              target: Type.Optional(Type.Unknown()),
              since: Type.Optional(Time),
              until: Type.Optional(Time),
              groupBy: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
            },
            { additionalProperties: false },
          ),
        ),
        response: { 200: R.Impact },
      },
    },
    async (req) => revisions.impact(req.body ?? {}),
  );
  // No body schema: the note's absence must be a 400 naming `note`, in one place for both routes.
  app.post('/v1/provision', { schema: { response: { 200: R.ProvisionResult } } }, async (req) => {
    const { note, confirm } = provisionBody(req.body);
    return revisions.provision(req.actor, note, { confirm });
  });
  app.get('/v1/revisions', { schema: { response: { 200: R.Revisions } } }, async () =>
    revisions.listRevisions(),
  );
  app.post(
    '/v1/revisions/:n/rollback',
    { schema: { params: RevisionParams, response: { 200: R.ProvisionResult } } },
    async (req) => {
      const { note, confirm } = provisionBody(req.body);
      return revisions.rollback(req.actor, req.params.n, note, { confirm });
    },
  );
  app.get(
    '/v1/revisions/:n/diff',
    {
      schema: {
        params: RevisionParams,
        querystring: Type.Object({
          to: Type.Optional(
            Type.String({ pattern: '^(draft|[1-9][0-9]*)$', description: 'a revision or draft' }),
          ),
        }),
        response: { 200: R.RevisionDiff },
      },
    },
    async (req) => {
      const to = req.query.to ?? 'draft';
      return revisions.revisionDiff(req.params.n, to === 'draft' ? 'draft' : Number(to));
    },
  );
  app.get(
    '/v1/revisions/:n',
    { schema: { params: RevisionParams, response: { 200: R.Revision } } },
    async (req) => revisions.getRevision(req.params.n),
  );
  app.get(
    '/v1/rulesets/:workload',
    { schema: { params: Type.Object({ workload: Name }), response: { 200: R.RuleSet } } },
    async (req) => {
      const { ruleSet, groups } = revisions.getRuleSet(req.params.workload);
      return { ruleSet: GroupRuleSet.toJSON(ruleSet), groups: groups.map(AddressGroup.toJSON) };
    },
  );
}
