// Visibility's REST routes: flows, the map, recommendations and events; explain and hygiene.
import { Type } from '@sinclair/typebox';
import * as R from '../responses.js';
import { type Api, Name, Time } from '../route-support.js';
import type { ExplainService } from './explain.js';
import type { HygieneService } from './hygiene.js';
import type { VisibilityService } from './service.js';
import { time } from './window.js';

export function registerVisibilityRoutes(app: Api, visibility: VisibilityService): void {
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
        response: { 200: R.Flows },
      },
    },
    async (req) => visibility.flows(req.query),
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
        response: { 200: R.FlowMap },
      },
    },
    async (req) => visibility.map(req.query),
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
        response: { 200: R.Recommendation },
      },
    },
    async (req) => visibility.recommendations(req.body),
  );
  app.get(
    '/v1/events',
    {
      schema: {
        querystring: Type.Object({
          workload: Type.Optional(Name),
          kind: Type.Optional(
            Type.String({
              pattern: '^[A-Za-z_]{1,64}$',
              description: 'event code, e.g. ANOMALY_NEW_DEPENDENCY, DATAPLANE_TAMPERED',
            }),
          ),
          since: Type.Optional(Time),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
        }),
        response: { 200: R.Events },
      },
    },
    async (req) => {
      const { kind, since, ...rest } = req.query;
      return visibility.listEvents({
        ...rest,
        code: kind?.toUpperCase(),
        since: time(since, 'since'),
      });
    },
  );
}

/** Questions about policy that store nothing, so viewers may ask them. */
export function registerQuestionRoutes(
  app: Api,
  questions: { explain: ExplainService; hygiene: HygieneService },
): void {
  app.get(
    '/v1/hygiene',
    {
      schema: {
        querystring: Type.Object({
          days: Type.Optional(Type.Integer({ minimum: 1, maximum: 3650 })),
          expiringDays: Type.Optional(Type.Integer({ minimum: 0, maximum: 3650 })),
        }),
        response: { 200: R.Hygiene },
      },
    },
    async (req) => questions.hygiene.audit(req.query),
  );
  app.post(
    '/v1/explain',
    {
      config: { readOnly: true },
      schema: {
        body: Type.Object(
          {
            from: Type.String({ minLength: 1, maxLength: 1000 }),
            to: Type.String({ minLength: 1, maxLength: 1000 }),
            protocol: Type.String({ minLength: 1, maxLength: 10 }),
            port: Type.Optional(Type.Integer({ minimum: 0, maximum: 65_535 })),
            revision: Type.Optional(Type.Integer({ minimum: 0 })),
            draft: Type.Optional(Type.Boolean()),
          },
          { additionalProperties: false },
        ),
        response: { 200: R.Explain },
      },
    },
    async (req) => questions.explain.explain(req.body),
  );
}
