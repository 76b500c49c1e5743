// What the REST routes of every domain share: common schemas, the If-Match/version rule and
// ETags, and the app type with its TypeBox provider. The error mapping and the auth hook stay in
// api.ts.
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import type {
  FastifyBaseLogger,
  FastifyInstance,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
} from 'fastify';
import { ControlPlaneError, type ErrorDetail } from './errors.js';

/** The API app the routes register on. */
export type Api = FastifyInstance<
  RawServerDefault,
  RawRequestDefaultExpression,
  RawReplyDefaultExpression,
  FastifyBaseLogger,
  TypeBoxTypeProvider
>;

export const Name = Type.String({ minLength: 1, maxLength: 253 });
export const NameParams = Type.Object({ name: Name });
export const IdParams = Type.Object({ id: Type.String({ minLength: 1 }) });
export const Labels = Type.Record(Type.String(), Type.String());
export const ModeName = Type.Union([Type.Literal('monitor'), Type.Literal('enforce')]);
export const PartialMode = Type.Object(
  { ingress: Type.Optional(ModeName), egress: Type.Optional(ModeName) },
  { additionalProperties: false },
);

export const Time = Type.String({ description: 'ISO 8601 time' });

/** An optional boolean of a hand-checked body (`confirm`): `"yes"` or `"true"` is refused, never coerced. */
export function booleanField(value: unknown, path: string): ErrorDetail[] {
  return value === undefined || typeof value === 'boolean'
    ? []
    : [{ path, message: 'must be a boolean' }];
}

/** Fields of a hand-checked body that it does not know, each named (as the schemas do). */
export function unknownFields(body: unknown, known: readonly string[]): ErrorDetail[] {
  if (typeof body !== 'object' || body === null) return [];
  return Object.keys(body)
    .filter((k) => !known.includes(k))
    .map((path) => ({ path, message: 'is not a known field' }));
}

/**
 * The version a write is conditional on: `If-Match: "<v>"` (what GET's ETag said), else the
 * body's `version`; undefined (no header, or `*`) writes unconditionally.
 */
export function expectedVersion(
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

export const etag = (version: number) => `"${version}"`;
