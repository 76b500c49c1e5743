// The REST edge: the fastify app, the one place an error becomes an HTTP status and body, and
// the one authentication hook (bearer token, roles). Each domain's routes are in its own
// routes.ts; this file must not hold domain routes or rules.
import AjvCompiler, { type ValidatorFactory } from '@fastify/ajv-compiler';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { registerAccessRoutes } from './access/routes.js';
import { isConsolePath, registerConsole } from './console.js';
import type { Domains } from './domains.js';
import { ControlPlaneError, type ControlPlaneErrorCode, type ErrorDetail } from './errors.js';
import { registerFleetRoutes } from './fleet/routes.js';
import { forbiddenKeyPath } from './forbidden-keys.js';
import { createMethodIndex } from './method-index.js';
import { registerPolicyAdminRoutes } from './policy-admin/routes.js';
import { ErrorResponse } from './responses.js';
import { registerRolloutRoutes } from './revisions/rollout-routes.js';
import { registerRevisionRoutes } from './revisions/routes.js';
import { registerQuestionRoutes, registerVisibilityRoutes } from './visibility/routes.js';

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
  METHOD_NOT_ALLOWED: 405,
  CONFLICT: 409,
  IMPACT_CONFIRMATION_REQUIRED: 409,
  PAYLOAD_TOO_LARGE: 413,
  URI_TOO_LONG: 414,
  UNSUPPORTED_MEDIA_TYPE: 415,
  INTERNAL: 500,
};
/** Fastify's own client errors (body too large, URL too long, no route) by their status. */
const FASTIFY_STATUS: Record<number, ControlPlaneErrorCode> = {
  404: 'NOT_FOUND',
  413: 'PAYLOAD_TOO_LARGE',
  414: 'URI_TOO_LONG',
  415: 'UNSUPPORTED_MEDIA_TYPE',
};
/** Every route's error answers in the OpenAPI document: the one shape, whatever the status. */
const ERROR_RESPONSES = { '4xx': ErrorResponse, '5xx': ErrorResponse };
/** Longest path parameter: a name (253, as DNS) with room to spare; longer is a 414. */
const MAX_PARAM_LENGTH = 256;

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
    e = new ControlPlaneError(
      FASTIFY_STATUS[fe.statusCode] ?? 'VALIDATION_FAILED',
      (err as Error).message,
    );
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

/** Served without a token: liveness, Prometheus, the OpenAPI page. */
const PUBLIC_PATHS = new Set(['/healthz', '/metrics', '/docs']);

/**
 * Bodies are JSON and validated as sent: `"5"` is not a number, `"yes"` not a boolean. The query
 * string and path parameters are text by nature, so they keep fastify's coercion.
 *
 * Each schema is compiled when its route is first called: Ajv compiling them all was ~80 ms of
 * every start, before the agents' handshakes start (a CPU profile of a restart). fastify reads `schemaEnv`
 * (to let Ajv coerce the root value) and `errors` from what it is given: both come from the
 * compiled function.
 */
const strictBodyValidator: ValidatorFactory = (externalSchemas, options) => {
  const coercing = AjvCompiler()(externalSchemas, options);
  const strict = AjvCompiler()(externalSchemas, {
    ...options,
    customOptions: { ...options?.customOptions, coerceTypes: false },
  } as typeof options);
  return (route) => {
    type Validate = ReturnType<typeof strict>;
    let compiled: Validate | undefined;
    const get = () => (compiled ??= (route.httpPart === 'body' ? strict : coercing)(route));
    const validate = ((...args: Parameters<Validate>) => {
      const f = get();
      const ok = f(...args);
      validate.errors = f.errors;
      return ok;
    }) as Validate;
    Object.defineProperty(validate, 'schemaEnv', { get: () => get().schemaEnv });
    return validate;
  };
};

export interface ApiOptions {
  domains: Domains;
  log: Logger;
  /** Largest `PUT /v1/ip-lists/:name` body (default 32 MiB); other routes keep 1 MiB. */
  maxIpListBytes?: number;
  /** The web console's built files (default packages/console/dist), served at /ui. */
  consoleDir?: string;
}

/** Builds the REST API (not listening); `app.inject` serves tests without a socket. */
export async function createApi(options: ApiOptions): Promise<FastifyInstance> {
  const { domains, log } = options;
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // Unknown fields are errors, not silently dropped. The route schemas are ours: Ajv's compile
    // still refuses a bad keyword value, and openapi.test.ts checks the document they make; the
    // meta-schema check on top, in both Ajv instances at every start, was ~0.15 s of CPU of the
    // restart that a whole fleet waits for.
    ajv: { customOptions: { removeAdditional: false, validateSchema: false } },
    schemaController: { compilersFactory: { buildValidator: strictBodyValidator } },
    // What fastify answers before any route (URL too long, bad URL) in the one error shape too.
    frameworkErrors: (err, req, reply) => {
      const { status, body } = toErrorResponse(err, req.log);
      (reply as FastifyReply).status(status).send(body);
    },
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.decorateRequest('actor', '');
  // An empty JSON body means "no body" (a bare `POST /v1/provision` from curl with a JSON
  // content type); anything else goes through fastify's own hardened JSON parser.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  // The API reads JSON only: any other body (text/plain included) is a 415.
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    const text = body.toString();
    if (text === '') return done(null, undefined);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      // Fastify's parser words the syntax error (and sets the 400) as it always did.
      return parseJson(req, text, done);
    }
    const path = forbiddenKeyPath(value);
    if (path === undefined) return done(null, value);
    done(
      new ControlPlaneError('VALIDATION_FAILED', 'invalid body', {
        details: [{ path, message: 'is not allowed as a key' }],
      }),
      undefined,
    );
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
  // Answers are sent as they are: response schemas document them (OpenAPI) but never filter
  // them, so a field a schema lacks is not silently dropped (the contract test finds it).
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  const methods = createMethodIndex();
  app.addHook('onRoute', (route) => {
    methods.add(route.method, route.url);
    const response = route.schema?.response as object | undefined;
    route.schema = { ...route.schema, response: { ...ERROR_RESPONSES, ...response } };
  });
  app.setNotFoundHandler((req, reply) => {
    const allow = methods.allowed(req.url.split('?', 1)[0]!);
    const err =
      allow.length > 0
        ? new ControlPlaneError(
            'METHOD_NOT_ALLOWED',
            `${req.method} not allowed; allowed: ${allow.join(', ')}`,
          )
        : new ControlPlaneError('NOT_FOUND', `no route ${req.method} ${req.url}`);
    if (allow.length > 0) reply.header('allow', allow.join(', '));
    const { status, body } = toErrorResponse(err, req.log);
    reply.status(status).send(body);
  });

  await app.register(swagger, {
    openapi: {
      // 3.1: JSON Schema as TypeBox writes it (`type: 'null'` for nullable fields).
      openapi: '3.1.0',
      info: { title: 'Bulkhead control plane', version: '0.1.0' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await registerConsole(app, options.consoleDir);

  app.addHook('onRequest', async (req) => {
    const path = req.url.split('?', 1)[0]!;
    if (PUBLIC_PATHS.has(path) || path.startsWith('/docs/')) return;
    // By the matched route, not the URL's text: only the console's own routes go without a token.
    if (isConsolePath(req.routeOptions.url ?? '')) return;
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (!m) throw new ControlPlaneError('UNAUTHENTICATED', 'missing bearer token');
    const token = domains.access.authenticate(m[1]!);
    const readOnly =
      (req.routeOptions.config as { readOnly?: boolean } | undefined)?.readOnly === true;
    if (token.role !== 'admin' && req.method !== 'GET' && req.method !== 'HEAD' && !readOnly) {
      throw new ControlPlaneError('FORBIDDEN', `role ${token.role} may only read`);
    }
    req.actor = token.name;
  });

  // The route pattern, never the raw URL: one series per route, not per workload name.
  app.addHook('onResponse', async (req, reply) => {
    domains.metrics.apiRequests.observe(
      {
        method: req.method,
        route: req.routeOptions.url ?? 'unmatched',
        status: String(reply.statusCode),
      },
      reply.elapsedTime / 1000,
    );
  });

  app.get('/healthz', { schema: { hide: true } }, async () => ({ ok: true }));
  // Prometheus scrapes without a token; the metrics hold counts, never names or addresses.
  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    reply.type(domains.metrics.registry.contentType);
    return domains.metrics.registry.metrics();
  });

  registerPolicyAdminRoutes(app, domains.policy, domains.revisions, {
    maxIpListBytes: options.maxIpListBytes,
  });
  registerRevisionRoutes(app, domains.revisions);
  registerRolloutRoutes(app, domains.rollouts);
  registerFleetRoutes(app, domains.fleet);
  registerVisibilityRoutes(app, domains.visibility);
  registerQuestionRoutes(app, domains);
  registerAccessRoutes(app, domains.access);

  await app.ready();
  return app;
}
