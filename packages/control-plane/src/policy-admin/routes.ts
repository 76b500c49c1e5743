// Policy administration's REST routes: workloads, the draft's IP lists, services and policies,
// and the draft as a whole.
import { IpListSchema, PolicySchema, ServiceSchema, WorkloadPatchSchema } from '@bulkhead/policy';
import { type TSchema, Type } from '@sinclair/typebox';
import { invalid } from '../errors.js';
import * as R from '../responses.js';
import type { RevisionsService } from '../revisions/service.js';
import { type Api, booleanField, etag, expectedVersion, NameParams } from '../route-support.js';
import {
  type PolicyAdminService,
  RESOURCE_KINDS,
  type ResourcePath,
  type WorkloadPatch,
} from './service.js';

const RESOURCE_SCHEMAS: Record<ResourcePath, TSchema> = {
  'ip-lists': IpListSchema,
  services: ServiceSchema,
  policies: PolicySchema,
};

/** `--max-ip-list-bytes`' default: a 100k-CIDR IP list is about 2 MB of JSON. */
export const MAX_IP_LIST_BYTES = 32 << 20;

export function registerPolicyAdminRoutes(
  app: Api,
  policy: PolicyAdminService,
  revisions: Pick<RevisionsService, 'provisionWorkload'>,
  options: { maxIpListBytes?: number } = {},
): void {
  // --- workloads
  app.get(
    '/v1/workloads',
    {
      schema: {
        querystring: Type.Object({ pending: Type.Optional(Type.Boolean()) }),
        response: { 200: Type.Array(R.WorkloadRecord) },
      },
    },
    // `?pending=true`: those whose agent claims addresses that wait for an admin.
    async (req) => policy.listWorkloads().filter((w) => !req.query.pending || w.pending !== null),
  );
  app.get(
    '/v1/workloads/:name',
    { schema: { params: NameParams, response: { 200: R.WorkloadRecord } } },
    async (req, reply) => {
      const w = policy.getWorkload(req.params.name);
      return reply.header('etag', etag(w.version)).send(w);
    },
  );
  app.patch(
    '/v1/workloads/:name',
    // The schema documents the body; policy's validator checks it and names the fields.
    {
      schema: {
        params: NameParams,
        body: WorkloadPatchSchema,
        response: { 200: R.PatchedWorkload },
      },
      validatorCompiler: () => () => true,
    },
    async (req, reply) => {
      // The patch edits the draft. `provision` (also in the query) provisions just this change
      // at once, behind the impact gate (`confirm`, `note`); `version` rides along.
      const body = (req.body ?? {}) as Record<string, unknown>;
      const { confirm, provision, note, version, ...patch } = body;
      const query = (req.query ?? {}) as { confirm?: string; provision?: string };
      const bad = [
        ...booleanField(confirm, 'confirm'),
        ...booleanField(provision, 'provision'),
        ...(note === undefined || (typeof note === 'string' && note.trim() !== '')
          ? []
          : [{ path: 'note', message: 'must be a non-empty string' }]),
      ];
      if (bad.length > 0) throw invalid('invalid body', bad);
      const { name } = req.params;
      const edit = () =>
        policy.patchWorkload(req.actor, name, patch as WorkloadPatch, {
          ifMatch: expectedVersion(req.headers['if-match'], version),
        });
      if (provision !== true && query.provision !== 'true') {
        const w = edit();
        return reply.header('etag', etag(w.version)).send(w);
      }
      const result = revisions.provisionWorkload(
        req.actor,
        name,
        (note as string | undefined) ?? `workload ${name}: labels or mode changed`,
        { confirm: confirm === true || query.confirm === 'true' },
        edit,
      );
      const w = policy.getWorkload(name);
      return reply.header('etag', etag(w.version)).send({ ...w, provisioned: result });
    },
  );
  app.delete(
    '/v1/workloads/:name',
    { schema: { params: NameParams, response: { 204: R.NoContent } } },
    async (req, reply) => {
      policy.deleteWorkload(req.actor, req.params.name, expectedVersion(req.headers['if-match']));
      return reply.status(204).send(null);
    },
  );

  // --- ip lists, services, policies
  for (const kind of Object.keys(RESOURCE_KINDS) as ResourcePath[]) {
    const Resource = R.RESOURCE_RESPONSES[kind];
    app.get(`/v1/${kind}`, { schema: { response: { 200: Type.Array(Resource) } } }, async () =>
      policy.listResources(kind),
    );
    app.get(
      `/v1/${kind}/:name`,
      { schema: { params: NameParams, response: { 200: Resource } } },
      async (req, reply) => {
        const r = policy.getResource(kind, req.params.name);
        return reply.header('etag', etag(r.version)).send(r);
      },
    );
    app.put(
      `/v1/${kind}/:name`,
      {
        schema: {
          params: NameParams,
          body: RESOURCE_SCHEMAS[kind],
          response: { 200: Resource },
        },
        validatorCompiler: () => () => true,
        ...(kind === 'ip-lists' ? { bodyLimit: options.maxIpListBytes ?? MAX_IP_LIST_BYTES } : {}),
      },
      async (req, reply) => {
        const r = policy.putResource(
          req.actor,
          kind,
          req.params.name,
          req.body,
          expectedVersion(req.headers['if-match']),
        );
        return reply.header('etag', etag(r.version)).send(r);
      },
    );
    app.delete(
      `/v1/${kind}/:name`,
      { schema: { params: NameParams, response: { 204: R.NoContent } } },
      async (req, reply) => {
        policy.deleteResource(
          req.actor,
          kind,
          req.params.name,
          expectedVersion(req.headers['if-match']),
        );
        return reply.status(204).send(null);
      },
    );
  }

  // --- the draft as a whole
  app.get('/v1/draft', { schema: { response: { 200: R.Draft } } }, async () => policy.draft());
  app.delete('/v1/draft', { schema: { response: { 200: R.DiscardedDraft } } }, async (req) =>
    policy.discardDraft(req.actor),
  );
}
