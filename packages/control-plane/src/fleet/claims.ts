// What an agent's word may establish (docs/SECURITY.md): the scope an enrolment token puts on
// the hosts enrolled with it (names, labels, address ranges) and the rules for the addresses an
// agent claims (a bounded count, canonical text, ranges). Pure: no store, no clock; fleet's
// enrolment and address handling decide with it what to refuse, apply or hold for approval.
import {
  formatAddress,
  type Labels,
  parseAddress,
  parseCidr,
  validateWorkloadPatch,
} from '@bulkhead/policy';
import type { ErrorDetail } from '../errors.js';
import { checkCidrs, MAX_RANGES } from '../policy-admin/service.js';

/** Most addresses one workload may claim, at enrolment and in any Hello. */
export const MAX_ADDRESSES = 64;

/**
 * Limits on what a host enrolled with a token may be. A list left out does not restrict (the
 * admin trusted the holder in that respect); an empty list allows nothing.
 */
export interface EnrollmentScope {
  /** Workload names, exact or with `*` matching any run of characters (`web-*`). */
  names?: string[];
  /** Per label key, the values the host may ask for (`*`: any); other keys are refused. */
  labels?: Record<string, string[]>;
  /** CIDRs every enrolment address must lie in; recorded as the workload's address ranges. */
  cidrs?: string[];
}

/** Canonical text (RFC 5952) of an address, or undefined when it is none. */
export function canonicalAddress(text: string): string | undefined {
  const a = parseAddress(text);
  return a && formatAddress(a.family, a.value);
}

/** True when the address lies in one of the CIDRs (both already valid). */
export function inRanges(address: string, cidrs: readonly string[]): boolean {
  const a = parseAddress(address);
  if (!a) return false;
  return cidrs.some((c) => {
    const r = parseCidr(c);
    return r.ok && r.range.family === a.family && r.range.from <= a.value && a.value <= r.range.to;
  });
}

const NAME_GLOB = /^[a-z0-9*]([a-z0-9.*-]{0,252})$/;

/** Problems of a scope as an admin sent it, with paths under `scope`. */
export function checkScope(scope: EnrollmentScope): ErrorDetail[] {
  const out: ErrorDetail[] = [];
  const names = scope.names ?? [];
  if (names.length > MAX_RANGES) {
    out.push({ path: 'scope.names', message: `at most ${MAX_RANGES} entries` });
  }
  names.forEach((n, i) => {
    if (!NAME_GLOB.test(n)) {
      out.push({
        path: `scope.names[${i}]`,
        message: 'must be a lowercase workload name, `*` matching any run of characters',
      });
    }
  });
  for (const [key, values] of Object.entries(scope.labels ?? {})) {
    values.forEach((v, i) => {
      // A label value is checked as policy checks one; `*` stands for any of them.
      const diags = validateWorkloadPatch({ labels: { [key]: v === '*' ? 'x' : v } });
      for (const d of diags) out.push({ path: `scope.labels.${key}[${i}]`, message: d.message });
    });
  }
  out.push(...checkCidrs(scope.cidrs ?? [], 'scope.cidrs'));
  return out;
}

function globMatches(glob: string, name: string): boolean {
  const re = glob.split('*').map((part) => part.replace(/[.+?^${}()|[\]\\-]/g, '\\$&'));
  return new RegExp(`^${re.join('.*')}$`).test(name);
}

/**
 * Where an enrolment falls outside the token's scope: `hostname`, `labels.<key>`,
 * `addresses[i]`. Labels the token sets itself are always allowed.
 */
export function scopeViolations(
  scope: EnrollmentScope,
  tokenLabels: Labels,
  req: { name: string; labels: Labels; addresses: readonly string[] },
): ErrorDetail[] {
  const out: ErrorDetail[] = [];
  if (scope.names && !scope.names.some((g) => globMatches(g, req.name))) {
    out.push({
      path: 'hostname',
      message: `"${req.name}" is not among the names this token may enrol (${scope.names.join(', ')})`,
    });
  }
  if (scope.labels) {
    for (const [key, value] of Object.entries(req.labels)) {
      if (key in tokenLabels) continue;
      const allowed = scope.labels[key];
      if (!allowed || !(allowed.includes('*') || allowed.includes(value))) {
        out.push({
          path: `labels.${key}`,
          message: `${key}=${value} is outside this token's scope`,
        });
      }
    }
  }
  if (scope.cidrs) {
    req.addresses.forEach((a, i) => {
      if (!inRanges(a, scope.cidrs!)) {
        out.push({
          path: `addresses[${i}]`,
          message: `${a} is outside the token's address ranges (${scope.cidrs!.join(', ')})`,
        });
      }
    });
  }
  return out;
}

/**
 * Checks a claimed address list: at most MAX_ADDRESSES, each a valid address. Returns the
 * canonical, de-duplicated addresses, or the problems with their paths.
 */
export function canonicalClaim(
  addresses: readonly string[],
): { ok: true; addresses: string[] } | { ok: false; problems: ErrorDetail[] } {
  if (addresses.length > MAX_ADDRESSES) {
    return {
      ok: false,
      problems: [
        {
          path: 'addresses',
          message: `at most ${MAX_ADDRESSES} addresses per workload (${addresses.length} claimed)`,
        },
      ],
    };
  }
  const problems: ErrorDetail[] = [];
  const out = new Set<string>();
  addresses.forEach((a, i) => {
    const c = canonicalAddress(a);
    if (c === undefined) {
      problems.push({
        path: `addresses[${i}]`,
        message: `'${a}' is not a valid IPv4 or IPv6 address (no prefix length)`,
      });
    } else out.add(c);
  });
  return problems.length > 0 ? { ok: false, problems } : { ok: true, addresses: [...out] };
}

/** Same members, whatever the order and text form. */
export function sameAddresses(a: readonly string[], b: readonly string[]): boolean {
  const canon = (xs: readonly string[]) =>
    [...new Set(xs.map((x) => canonicalAddress(x) ?? x))].sort().join(',');
  return canon(a) === canon(b);
}
