// Access's REST routes: API tokens and the audit log. Authentication itself is api.ts's hook.
import { Type } from '@sinclair/typebox';
import * as R from '../responses.js';
import { type Api, IdParams } from '../route-support.js';
import type { AccessService } from './service.js';

export function registerAccessRoutes(app: Api, access: AccessService): void {
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
        response: { 201: R.CreatedApiToken },
      },
    },
    async (req, reply) =>
      reply.status(201).send(access.createApiToken(req.actor, req.body.name, req.body.role)),
  );
  app.get('/v1/tokens', { schema: { response: { 200: R.ApiTokens } } }, async () =>
    access.listApiTokens(),
  );
  app.delete(
    '/v1/tokens/:id',
    { schema: { params: IdParams, response: { 204: R.NoContent } } },
    async (req, reply) => {
      access.deleteApiToken(req.actor, req.params.id);
      return reply.status(204).send(null);
    },
  );

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
        response: { 200: R.Audit },
      },
    },
    async (req) => access.listAudit(req.query),
  );
}
