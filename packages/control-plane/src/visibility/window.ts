// Time windows of flow questions (visibility's queries and the impact of a change), as the REST
// edge passes them: ISO text checked here, so a bad value is a 400 naming its field.
import { invalid } from '../errors.js';
import type { FlowQuery } from './flow-store.js';

/** ISO time of a query field, or a 400 naming it. */
export function time(value: string | undefined, path: string): string | undefined {
  if (value === undefined) return undefined;
  const t = Date.parse(value);
  if (Number.isNaN(t))
    throw invalid('invalid query', [{ path, message: 'must be an ISO 8601 time' }]);
  return new Date(t).toISOString();
}

export function window(q: { since?: string; until?: string }): Pick<FlowQuery, 'since' | 'until'> {
  return { since: time(q.since, 'since'), until: time(q.until, 'until') };
}

/** Label keys flows are grouped by when the question names none. */
export const DEFAULT_GROUP_BY = ['app', 'role'];
