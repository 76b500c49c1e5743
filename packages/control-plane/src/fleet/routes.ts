// Fleet's REST routes: agents, revocation, counters and enrolment tokens.
import { Type } from '@sinclair/typebox';
import { type Api, IdParams, Labels, Name, PartialMode } from '../route-support.js';
import type { FleetService } from './service.js';

export function registerFleetRoutes(app: Api, fleet: FleetService): void {
  app.get('/v1/agents', async () => fleet.listAgents());
  app.post('/v1/agents/:id/revoke', { schema: { params: IdParams } }, async (req) =>
    fleet.revokeAgent(req.actor, req.params.id),
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
    async (req) => fleet.listCounters(req.query),
  );

  // --- enrolment tokens
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
    async (req, reply) => reply.status(201).send(fleet.createEnrollmentToken(req.actor, req.body)),
  );
  app.get('/v1/enrollment-tokens', async () => fleet.listEnrollmentTokens());
  app.delete('/v1/enrollment-tokens/:id', { schema: { params: IdParams } }, async (req, reply) => {
    fleet.deleteEnrollmentToken(req.actor, req.params.id);
    return reply.status(204).send();
  });
}
