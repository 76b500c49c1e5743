// Access's REST routes: API tokens and the audit log. Authentication itself is api.ts's hook.
import { Type } from '@sinclair/typebox';
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
      },
    },
    async (req, reply) =>
      reply.status(201).send(access.createApiToken(req.actor, req.body.name, req.body.role)),
  );
  app.get('/v1/tokens', async () => access.listApiTokens());
  app.delete('/v1/tokens/:id', { schema: { params: IdParams } }, async (req, reply) => {
    access.deleteApiToken(req.actor, req.params.id);
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
    async (req) => access.listAudit(req.query),
  );
}
