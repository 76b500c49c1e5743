// Secrets of API and enrolment tokens: how they are made and the only form that is stored.
import { createHash, randomBytes } from 'node:crypto';

/** sha256 hex of a secret; only this is ever stored. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** A new secret: prefix + 32 random bytes, base64url. */
export function newSecret(prefix: 'bh_' | 'bhe_'): string {
  return prefix + randomBytes(32).toString('base64url');
}
