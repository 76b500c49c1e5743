import { IpListSchema, PolicySchema, ServiceSchema, WorkloadPatchSchema } from '@bulkhead/policy';
import { RuleSet } from '@bulkhead/proto';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { type TSchema, Type } from '@sinclair/typebox';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { type Engine, RESOURCE_KINDS, type ResourcePath } from './engine.js';
import { ControlPlaneError, type ControlPlaneErrorCode, type ErrorDetail } from './errors.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Name of the API token that made the request; the audit actor. */
    actor: string;
  }
}

const HTTP_STATUS: Record<ControlPlaneErrorCode, number> = {
  VALIDATION_FAILED: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  IMPACT_CONFIRMATION_REQUIRED: 409,
  INTERNAL: 500,
};

export interface ErrorBody {
  error: { code: ControlPlaneErrorCode; message: string; details: ErrorDetail[]; impact?: unknown };
}

/** `/ingress/0/action` -> `ingress[0].action`, the path style of policy diagnostics. */
function pointerToPath(pointer: string): string {
  return pointer
    .split('/')
    .slice(1)
    .reduce(
      (path, key) => (/^\d+$/.test(key) ? `${path}[${key}]` : path === '' ? key : `${path}.${key}`),
      '',
    );
}

interface AjvIssue {
  instancePath: string;
  message?: string;
  params?: Record<string, unknown>;
}

/** The one place an error becomes an HTTP status and body; unknown errors are logged, not shown. */
export function toErrorResponse(
  err: unknown,
  log: FastifyBaseLogger,
): { status: number; body: ErrorBody } {
  let e: ControlPlaneError;
  const fe = err as { validation?: AjvIssue[]; validationContext?: string; statusCode?: number };
  if (err instanceof ControlPlaneError) {
    e = err;
  } else if (Array.isArray(fe.validation)) {
    const details = fe.validation.map((v) => {
      const missing = v.params?.missingProperty ?? v.params?.additionalProperty;
      const path = pointerToPath(v.instancePath);
      const field = typeof missing === 'string' ? (path ? `${path}.${missing}` : missing) : path;
      const message =
        v.params?.additionalProperty !== undefined
          ? 'is not a known field'
          : (v.message ?? 'is invalid');
      return { path: field, message };
    });
    e = new ControlPlaneError('VALIDATION_FAILED', `invalid ${fe.validationContext ?? 'request'}`, {
      details,
    });
  } else if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    // Fastify's own client errors (malformed JSON, wrong content type, body too large).
    const code = fe.statusCode === 404 ? 'NOT_FOUND' : 'VALIDATION_FAILED';
    e = new ControlPlaneError(code, (err as Error).message);
  } else {
    log.error({ err }, 'internal error in API handler');
    e = new ControlPlaneError('INTERNAL', 'internal error');
  }
  if (e === err && e.code === 'INTERNAL') {
    log.error({ err }, 'internal error in API handler');
    e = new ControlPlaneError('INTERNAL', 'internal error');
  }
  const error: ErrorBody['error'] = { code: e.code, message: e.message, details: e.details };
  if (e.impact !== undefined) error.impact = e.impact;
  return { status: HTTP_STATUS[e.code], body: { error } };
}

const Name = Type.String({ minLength: 1, maxLength: 253 });
const NameParams = Type.Object({ name: Name });
const IdParams = Type.Object({ id: Type.String({ minLength: 1 }) });
const Labels = Type.Record(Type.String(), Type.String());
const ModeName = Type.Union([Type.Literal('monitor'), Type.Literal('enforce')]);
const PartialMode = Type.Object(
  { ingress: Type.Optional(ModeName), egress: Type.Optional(ModeName) },
  { additionalProperties: false },
);

const Time = Type.String({ description: 'ISO 8601 time' });
const RevisionParams = Type.Object({ n: Type.Integer({ minimum: 1 }) });

/** `{note, confirm?}` of provision and rollback: a revision always says why it exists. */
function provisionBody(body: unknown): { note: string; confirm: boolean } {
  const b = (body ?? {}) as { note?: unknown; confirm?: unknown };
  const details: ErrorDetail[] = [];
  if (typeof b.note !== 'string' || b.note.trim() === '') {
    details.push({ path: 'note', message: 'is required: a non-empty string saying why' });
  }
  if (b.confirm !== undefined && typeof b.confirm !== 'boolean') {
    details.push({ path: 'confirm', message: 'must be a boolean' });
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body) || details.length > 0) {
    throw new ControlPlaneError('VALIDATION_FAILED', 'invalid body', {
      details: details.length > 0 ? details : [{ path: '', message: 'must be an object' }],
    });
  }
  return { note: b.note as string, confirm: b.confirm === true };
}

/**
 * The version a write is conditional on: `If-Match: "<v>"` (what GET's ETag said), else the
 * body's `version`; undefined (no header, or `*`) writes unconditionally.
 */
function expectedVersion(
  header: string | string[] | undefined,
  bodyVersion?: unknown,
): number | undefined {
  if (bodyVersion !== undefined && !(Number.isInteger(bodyVersion) && Number(bodyVersion) >= 0)) {
    throw new ControlPlaneError('VALIDATION_FAILED', 'invalid body', {
      details: [{ path: 'version', message: 'must be a non-negative integer' }],
    });
  }
  const text = Array.isArray(header) ? header[0] : header;
  if (text === undefined || text.trim() === '*') return bodyVersion as number | undefined;
  const m = /^\s*(?:W\/)?"?(\d{1,15})"?\s*$/.exec(text);
  if (!m) {
    throw new ControlPlaneError('VALIDATION_FAILED', 'invalid If-Match header', {
      details: [{ path: 'If-Match', message: 'must be "<version>", as the ETag of a GET' }],
    });
  }
  return Number(m[1]);
}

const etag = (version: number) => `"${version}"`;

const RESOURCE_SCHEMAS: Record<ResourcePath, TSchema> = {
  'ip-lists': IpListSchema,
  services: ServiceSchema,
  policies: PolicySchema,
};

export interface ApiOptions {
  engine: Engine;
  log: Logger;
}

/** Builds the REST API (not listening); `app.inject` serves tests without a socket. */
export async function createApi(options: ApiOptions): Promise<FastifyInstance> {
  const { engine, log } = options;
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    // Unknown fields are errors, not silently dropped.
    ajv: { customOptions: { removeAdditional: false } },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.decorateRequest('actor', '');
  // An empty JSON body means "no body" (a bare `POST /v1/provision` from curl with a JSON
  // content type); anything else goes through fastify's own hardened JSON parser.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = body.toString();
    if (text === '') done(null, undefined);
    else parseJson(req, text, done);
  });
  // Fastify logs two lines per request at info; agents' and dashboards' polling would drown
  // the log, so request lines only show at debug.
  if (log.level === 'info') {
    app.addHook('onRoute', (route) => {
      route.logLevel = 'warn';
    });
  }
  app.setErrorHandler((err, req, reply) => {
    const { status, body } = toErrorResponse(err, req.log);
    reply.status(status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    const { status, body } = toErrorResponse(
      new ControlPlaneError('NOT_FOUND', `no route ${req.method} ${req.url}`),
      req.log,
    );
    reply.status(status).send(body);
  });

  await app.register(swagger, {
    openapi: {
      info: { title: 'Bulkhead control plane', version: '0.1.0' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  app.addHook('onRequest', async (req) => {
    if (req.url === '/healthz' || req.url === '/docs' || req.url.startsWith('/docs/')) return;
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (!m) throw new ControlPlaneError('UNAUTHENTICATED', 'missing bearer token');
    const token = engine.authenticate(m[1]!);
    const readOnly =
      (req.routeOptions.config as { readOnly?: boolean } | undefined)?.readOnly === true;
    if (token.role !== 'admin' && req.method !== 'GET' && req.method !== 'HEAD' && !readOnly) {
      throw new ControlPlaneError('FORBIDDEN', `role ${token.role} may only read`);
    }
    req.actor = token.name;
  });

  app.get('/healthz', { schema: { hide: true } }, async () => ({ ok: true }));

  // --- workloads
  app.get('/v1/workloads', async () => engine.listWorkloads());
  app.get('/v1/workloads/:name', { schema: { params: NameParams } }, async (req, reply) => {
    const w = engine.getWorkload(req.params.name);
    return reply.header('etag', etag(w.version)).send(w);
  });
  app.patch(
    '/v1/workloads/:name',
    // The schema documents the body; policy's validator checks it and names the fields.
    {
      schema: { params: NameParams, body: WorkloadPatchSchema },
      validatorCompiler: () => () => true,
    },
    async (req, reply) => {
      // `confirm` (also in the query) and `version` ride along; they are not the workload's.
      const { confirm, version, ...patch } = (req.body ?? {}) as Record<string, unknown>;
      const query = req.query as { confirm?: string } | undefined;
      const w = engine.patchWorkload(
        req.actor,
        req.params.name,
        patch as Parameters<Engine['patchWorkload']>[2],
        {
          confirm: confirm === true || query?.confirm === 'true',
          ifMatch: expectedVersion(req.headers['if-match'], version),
        },
      );
      return reply.header('etag', etag(w.version)).send(w);
    },
  );
  app.delete('/v1/workloads/:name', { schema: { params: NameParams } }, async (req, reply) => {
    engine.deleteWorkload(req.actor, req.params.name, expectedVersion(req.headers['if-match']));
    return reply.status(204).send();
  });

  // --- ip lists, services, policies
  for (const kind of Object.keys(RESOURCE_KINDS) as ResourcePath[]) {
    app.get(`/v1/${kind}`, async () => engine.listResources(kind));
    app.get(`/v1/${kind}/:name`, { schema: { params: NameParams } }, async (req, reply) => {
      const r = engine.getResource(kind, req.params.name);
      return reply.header('etag', etag(r.version)).send(r);
    });
    app.put(
      `/v1/${kind}/:name`,
      {
        schema: { params: NameParams, body: RESOURCE_SCHEMAS[kind] },
        validatorCompiler: () => () => true,
      },
      async (req, reply) => {
        const r = engine.putResource(
          req.actor,
          kind,
          req.params.name,
          req.body,
          expectedVersion(req.headers['if-match']),
        );
        return reply.header('etag', etag(r.version)).send(r);
      },
    );
    app.delete(`/v1/${kind}/:name`, { schema: { params: NameParams } }, async (req, reply) => {
      engine.deleteResource(
        req.actor,
        kind,
        req.params.name,
        expectedVersion(req.headers['if-match']),
      );
      return reply.status(204).send();
    });
  }

  // --- draft, impact, revisions
  app.get('/v1/draft', async () => engine.draft());
  app.delete('/v1/draft', async (req) => engine.discardDraft(req.actor));
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
      },
    },
    async (req) => engine.impact(req.body ?? {}),
  );
  // No body schema: the note's absence must be a 400 naming `note`, in one place for both routes.
  app.post('/v1/provision', async (req) => {
    const { note, confirm } = provisionBody(req.body);
    return engine.provision(req.actor, note, { confirm });
  });
  app.get('/v1/revisions', async () => engine.listRevisions());
  app.post('/v1/revisions/:n/rollback', { schema: { params: RevisionParams } }, async (req) => {
    const { note, confirm } = provisionBody(req.body);
    return engine.rollback(req.actor, req.params.n, note, { confirm });
  });
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
      },
    },
    async (req) => {
      const to = req.query.to ?? 'draft';
      return engine.revisionDiff(req.params.n, to === 'draft' ? 'draft' : Number(to));
    },
  );
  app.get('/v1/revisions/:n', { schema: { params: RevisionParams } }, async (req) =>
    engine.getRevision(req.params.n),
  );
  app.get(
    '/v1/rulesets/:workload',
    { schema: { params: Type.Object({ workload: Name }) } },
    async (req) => RuleSet.toJSON(engine.getRuleSet(req.params.workload)),
  );

  // --- agents and telemetry
  app.get('/v1/agents', async () => engine.listAgents());
  app.post('/v1/agents/:id/revoke', { schema: { params: IdParams } }, async (req) =>
    engine.revokeAgent(req.actor, req.params.id),
  );
  app.get(
    '/v1/counters',
    {
      schema: {
        querystring: Type.Object({
          workload: Type.Optional(Name),
          ruleId: Type.Optional(Type.String()),
        }),
      },
    },
    async (req) => engine.listCounters(req.query),
  );

  const DirectionQ = Type.Union([Type.Literal('ingress'), Type.Literal('egress')]);
  const VerdictQ = Type.Union([
    Type.Literal('allowed'),
    Type.Literal('denied'),
    Type.Literal('would-deny'),
  ]);
  app.get(
    '/v1/flows',
    {
      schema: {
        querystring: Type.Object({
          workload: Type.Optional(Name),
          // Repeatable: one value arrives as a string, several as an array.
          label: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())])),
          port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65_535 })),
          protocol: Type.Optional(Type.String({ minLength: 1 })),
          verdict: Type.Optional(VerdictQ),
          direction: Type.Optional(DirectionQ),
          since: Type.Optional(Time),
          until: Type.Optional(Time),
          newSince: Type.Optional(Time),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })),
        }),
      },
    },
    async (req) => engine.flows(req.query),
  );
  app.get(
    '/v1/map',
    {
      schema: {
        querystring: Type.Object({
          groupBy: Type.Optional(Type.String({ description: 'label keys, comma-separated' })),
          since: Type.Optional(Time),
          until: Type.Optional(Time),
        }),
      },
    },
    async (req) => engine.map(req.query),
  );
  app.post(
    '/v1/recommendations',
    {
      // Read-only, so viewers may ask (see the auth hook).
      config: { readOnly: true },
      schema: {
        body: Type.Object(
          {
            // Checked by policy's validator, which names the field.
            scope: Type.Optional(Type.Unknown()),
            workload: Type.Optional(Name),
            groupBy: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
            since: Type.Optional(Time),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (req) => engine.recommendations(req.body),
  );
  app.get(
    '/v1/events',
    {
      schema: {
        querystring: Type.Object({
          workload: Type.Optional(Name),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
        }),
      },
    },
    async (req) => engine.listEvents(req.query),
  );

  // --- tokens
  app.post(
    '/v1/enrollment-tokens',
    {
      schema: {
        body: Type.Object(
          {
            labels: Type.Optional(Labels),
            mode: Type.Optional(PartialMode),
            ttlSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 31_536_000 })),
            maxUses: Type.Optional(Type.Integer({ minimum: 1 })),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (req, reply) => reply.status(201).send(engine.createEnrollmentToken(req.actor, req.body)),
  );
  app.get('/v1/enrollment-tokens', async () => engine.listEnrollmentTokens());
  app.delete('/v1/enrollment-tokens/:id', { schema: { params: IdParams } }, async (req, reply) => {
    engine.deleteEnrollmentToken(req.actor, req.params.id);
    return reply.status(204).send();
  });
  app.post(
    '/v1/tokens',
    {
      schema: {
        body: Type.Object(
          {
            name: Type.String({ minLength: 1, maxLength: 100 }),
            role: Type.Union([Type.Literal('admin'), Type.Literal('viewer')]),
          },
          { additionalProperties: false },
        ),
      },
    },
    async (req, reply) =>
      reply.status(201).send(engine.createApiToken(req.actor, req.body.name, req.body.role)),
  );
  app.get('/v1/tokens', async () => engine.listApiTokens());
  app.delete('/v1/tokens/:id', { schema: { params: IdParams } }, async (req, reply) => {
    engine.deleteApiToken(req.actor, req.params.id);
    return reply.status(204).send();
  });

  // --- audit
  app.get(
    '/v1/audit',
    {
      schema: {
        querystring: Type.Object({
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
          since: Type.Optional(
            Type.String({ description: 'audit id (exclusive) or ISO 8601 time' }),
          ),
        }),
      },
    },
    async (req) => engine.listAudit(req.query),
  );

  await app.ready();
  return app;
}
