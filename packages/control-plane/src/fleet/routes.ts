// Fleet's REST routes: agents, revocation, counters, enrolment tokens, and what an admin decides
// about a workload's identity (release) and the addresses its agent claims (approve, deny).
import { Type } from '@sinclair/typebox';
import * as R from '../responses.js';
import { type Api, IdParams, Labels, Name, NameParams, PartialMode } from '../route-support.js';
import type { FleetService } from './service.js';

export function registerFleetRoutes(app: Api, fleet: FleetService): void {
  app.get('/v1/agents', { schema: { response: { 200: Type.Array(R.Agent) } } }, async () =>
    fleet.listAgents(),
  );
  app.post(
    '/v1/agents/:id/revoke',
    { schema: { params: IdParams, response: { 200: R.Agent } } },
    async (req) => fleet.revokeAgent(req.actor, req.params.id),
  );
  app.get(
    '/v1/counters',
    {
      schema: {
        querystring: Type.Object({
          workload: Type.Optional(Name),
          ruleId: Type.Optional(Type.String()),
        }),
        response: { 200: R.Counters },
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
            workload: Type.Optional(Name),
            scope: Type.Optional(
              Type.Object(
                {
                  names: Type.Optional(Type.Array(Type.String({ maxLength: 253 }))),
                  labels: Type.Optional(
                    Type.Record(Type.String(), Type.Array(Type.String(), { minItems: 1 })),
                  ),
                  cidrs: Type.Optional(Type.Array(Type.String({ maxLength: 64 }))),
                },
                { additionalProperties: false },
              ),
            ),
          },
          { additionalProperties: false },
        ),
        response: { 201: R.CreatedEnrollmentToken },
      },
    },
    async (req, reply) => reply.status(201).send(fleet.createEnrollmentToken(req.actor, req.body)),
  );
  app.get(
    '/v1/enrollment-tokens',
    { schema: { response: { 200: R.EnrollmentTokens } } },
    async () => fleet.listEnrollmentTokens(),
  );
  app.delete(
    '/v1/enrollment-tokens/:id',
    { schema: { params: IdParams, response: { 204: R.NoContent } } },
    async (req, reply) => {
      fleet.deleteEnrollmentToken(req.actor, req.params.id);
      return reply.status(204).send(null);
    },
  );

  // --- workload identity and address claims
  app.post(
    '/v1/workloads/:name/release',
    {
      schema: {
        params: NameParams,
        body: Type.Object(
          { note: Type.String({ maxLength: 4096 }) },
          { additionalProperties: false },
        ),
        response: { 200: R.WorkloadRecord },
      },
    },
    async (req) => fleet.releaseWorkload(req.actor, req.params.name, req.body.note),
  );
  app.post(
    '/v1/workloads/:name/addresses/approve',
    { schema: { params: NameParams, response: { 200: R.WorkloadRecord } } },
    async (req) => fleet.approveAddresses(req.actor, req.params.name),
  );
  app.post(
    '/v1/workloads/:name/addresses/deny',
    { schema: { params: NameParams, response: { 200: R.WorkloadRecord } } },
    async (req) => fleet.denyAddresses(req.actor, req.params.name),
  );
}
