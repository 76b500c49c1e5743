// Staged rollout's REST routes: start, the current rollout (or one by id), pause, resume, abort.
import { Type } from '@sinclair/typebox';
import { invalid } from '../errors.js';
import { Rollout } from '../responses.js';
import type { Api } from '../route-support.js';
import type { RolloutService } from './rollout.js';

const RolloutBody = Type.Object(
  {
    note: Type.String({ minLength: 1, pattern: '\\S', description: 'why: a non-empty string' }),
    confirm: Type.Optional(Type.Boolean()),
    canary: Type.Optional(Type.String({ minLength: 1, description: 'label selector k=v[,k=v]' })),
    percent: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    waves: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
    watchSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 7 * 86_400 })),
  },
  { additionalProperties: false },
);

const answers = { schema: { response: { 200: Rollout } } };

export function registerRolloutRoutes(app: Api, rollouts: RolloutService): void {
  app.post(
    '/v1/rollouts',
    { schema: { body: RolloutBody, response: { 200: Rollout } } },
    async (req) => {
      if (req.body.canary !== undefined && req.body.percent !== undefined) {
        throw invalid('invalid body', [
          { path: 'percent', message: 'give canary or percent, not both' },
        ]);
      }
      return rollouts.start(req.actor, req.body);
    },
  );
  app.get('/v1/rollouts/current', answers, async () => rollouts.current());
  app.get(
    '/v1/rollouts/:id',
    {
      schema: {
        params: Type.Object({ id: Type.Integer({ minimum: 1 }) }),
        response: { 200: Rollout },
      },
    },
    async (req) => rollouts.get(req.params.id),
  );
  app.post('/v1/rollouts/current/pause', answers, async (req) => rollouts.pause(req.actor));
  app.post('/v1/rollouts/current/resume', answers, async (req) => rollouts.resume(req.actor));
  app.post('/v1/rollouts/current/abort', answers, async (req) => rollouts.abort(req.actor));
}
