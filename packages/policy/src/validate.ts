// Validation of single objects returns diagnostics, never throws: TypeBox checks the
// structure, the code below checks what a schema cannot (CIDR math, label syntax). A whole
// state (names, cross references) is validate-state.ts's; the helpers exported here are shared
// with it, not part of the package's API.

import type { TSchema } from '@sinclair/typebox';
import { type TypeCheck, TypeCompiler } from '@sinclair/typebox/compiler';
import { ValueErrorType } from '@sinclair/typebox/errors';
import { Value } from '@sinclair/typebox/value';
import { type IpRange, parseAddress, parseCidr, rangeContains } from './ip.js';
import type { Diagnostic } from './model.js';
import {
  IpListSchema,
  NAME_PATTERN,
  PolicySchema,
  ServiceSchema,
  WorkloadPatchSchema,
  WorkloadSchema,
} from './schema.js';

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** `policies` + `[3]` -> `policies[3]`; `policy` + `name` -> `policy.name`. */
export function join(prefix: string, segment: string | number): string {
  if (typeof segment === 'number') return `${prefix}[${segment}]`;
  if (!IDENTIFIER.test(segment)) return `${prefix}[${JSON.stringify(segment)}]`;
  return prefix === '' ? segment : `${prefix}.${segment}`;
}

function pointerToPath(prefix: string, pointer: string): string {
  let path = prefix;
  for (const raw of pointer.split('/').slice(1)) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    path = join(path, /^(0|[1-9][0-9]*)$/.test(key) ? Number(key) : key);
  }
  return path;
}

export type Rec = Record<string, unknown>;
export const isObject = (v: unknown): v is Rec =>
  typeof v === 'object' && v !== null && !Array.isArray(v);
export const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

function jsonType(v: unknown): string {
  if (Array.isArray(v)) return 'array';
  if (v === null) return 'null';
  return typeof v;
}

function schemaType(s: TSchema): string | undefined {
  if (typeof s.type === 'string') return s.type === 'integer' ? 'number' : s.type;
  if (s.const !== undefined) return typeof s.const;
  return undefined;
}

function describe(type: ValueErrorType, schema: TSchema): string | undefined {
  switch (type) {
    case ValueErrorType.ObjectRequiredProperty:
      return 'is required';
    case ValueErrorType.ObjectAdditionalProperties:
      return 'is not a known field';
    case ValueErrorType.Object:
      return 'must be an object';
    case ValueErrorType.Array:
      return 'must be a list';
    case ValueErrorType.String:
      return 'must be a string';
    case ValueErrorType.Integer:
      return 'must be an integer';
    case ValueErrorType.Number:
      return 'must be a number';
    case ValueErrorType.Boolean:
      return 'must be true or false';
    case ValueErrorType.IntegerMinimum:
    case ValueErrorType.IntegerMaximum:
    case ValueErrorType.NumberMinimum:
    case ValueErrorType.NumberMaximum:
      if (schema.minimum !== undefined && schema.maximum !== undefined) {
        return `must be between ${schema.minimum} and ${schema.maximum}`;
      }
      return schema.minimum !== undefined
        ? `must be at least ${schema.minimum}`
        : `must be at most ${schema.maximum}`;
    case ValueErrorType.ArrayMinItems:
      return schema.minItems === 1
        ? 'must not be empty'
        : `must have at least ${schema.minItems} items`;
    case ValueErrorType.StringPattern:
      return schema.pattern === NAME_PATTERN
        ? 'must be 1-63 lowercase letters, digits, ".", "_" or "-", starting and ending with a letter or digit'
        : `must match ${schema.pattern}`;
    case ValueErrorType.Literal:
      return `must be ${JSON.stringify(schema.const)}`;
    case ValueErrorType.Union: {
      const members = (schema.anyOf ?? []) as TSchema[];
      if (members.length > 0 && members.every((m) => m.const !== undefined)) {
        return `must be one of ${members.map((m) => String(m.const)).join(', ')}`;
      }
      return undefined;
    }
    default:
      return undefined;
  }
}

/**
 * Each schema's compiled checker, made at its first use (a few ms): a valid value, the usual
 * case, then costs a few microseconds instead of walking Value.Errors (~20-150 us a workload; a
 * control plane loading 2,000 of them at start waited ~0.15 s). Errors are walked only for a
 * value it refuses.
 */
const compiled = new WeakMap<TSchema, TypeCheck<TSchema>>();

function schemaDiagnostics(schema: TSchema, value: unknown, path: string): Diagnostic[] {
  let check = compiled.get(schema);
  if (!check) {
    check = TypeCompiler.Compile(schema);
    compiled.set(schema, check);
  }
  if (check.Check(value)) return [];
  const out: Diagnostic[] = [];
  const reported = new Set<string>();
  for (const error of Value.Errors(schema, value)) {
    const at = pointerToPath(path, error.path);
    // A missing field is also "not a string": the first error per field says it best.
    if (reported.has(at)) continue;
    reported.add(at);
    if (error.type === ValueErrorType.Union) {
      // A union of a name and an object: report against the member the user evidently
      // meant, so a bad port inside an inline spec gets its own precise path.
      const members = (error.schema.anyOf ?? []) as TSchema[];
      const meant = members.filter((m) => schemaType(m) === jsonType(error.value));
      if (meant.length === 1 && meant[0]!.const === undefined) {
        out.push(...schemaDiagnostics(meant[0]!, error.value, at));
        continue;
      }
      const message = describe(error.type, error.schema);
      const kinds = [...new Set(members.map(schemaType))].join(' or ');
      out.push({ path: at, message: message ?? `must be a ${kinds}` });
      continue;
    }
    out.push({
      path: at,
      message: describe(error.type, error.schema) ?? error.message.toLowerCase(),
    });
  }
  return out;
}

// Kubernetes label syntax: optional DNS-subdomain prefix and a name segment of <= 63.
const LABEL_NAME = /^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

function labelKeyProblem(key: string): string | undefined {
  const slash = key.indexOf('/');
  const name = slash < 0 ? key : key.slice(slash + 1);
  if (slash >= 0) {
    const prefix = key.slice(0, slash);
    if (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix)) {
      return `label key prefix '${prefix}' must be a lowercase DNS subdomain`;
    }
  }
  if (!LABEL_NAME.test(name)) {
    return `label key '${key}' must be 1-63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit (optionally after a "prefix/")`;
  }
  return undefined;
}

function labelValueProblem(value: string): string | undefined {
  if (value === '' || LABEL_NAME.test(value)) return undefined;
  return `label value '${value}' must be at most 63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit`;
}

function checkLabels(labels: unknown, path: string, out: Diagnostic[]): void {
  if (!isObject(labels)) return;
  for (const [key, value] of Object.entries(labels)) {
    const problem =
      labelKeyProblem(key) ?? (typeof value === 'string' ? labelValueProblem(value) : undefined);
    if (problem) out.push({ path: join(path, key), message: problem });
  }
}

function checkSelector(selector: unknown, path: string, out: Diagnostic[]): void {
  if (!isObject(selector)) return;
  checkLabels(selector.matchLabels, join(path, 'matchLabels'), out);
  list(selector.matchExpressions).forEach((req, i) => {
    if (!isObject(req)) return;
    const at = join(join(path, 'matchExpressions'), i);
    if (typeof req.key === 'string') {
      const problem = labelKeyProblem(req.key);
      if (problem) out.push({ path: join(at, 'key'), message: problem });
    }
    const values = list(req.values);
    if (req.operator === 'In' || req.operator === 'NotIn') {
      if (values.length === 0) {
        out.push({
          path: join(at, 'values'),
          message: `must not be empty for operator ${req.operator}`,
        });
      }
    } else if (req.operator === 'Exists' || req.operator === 'DoesNotExist') {
      if (values.length > 0) {
        out.push({
          path: join(at, 'values'),
          message: `must be empty for operator ${req.operator}`,
        });
      }
    }
    values.forEach((v, j) => {
      const problem = typeof v === 'string' ? labelValueProblem(v) : undefined;
      if (problem) out.push({ path: join(join(at, 'values'), j), message: problem });
    });
  });
}

const PORT_PROTOCOLS = new Set(['tcp', 'udp', 'sctp']);

function checkPortSpec(spec: unknown, path: string, out: Diagnostic[]): void {
  if (!isObject(spec)) return;
  const { protocol, port, endPort } = spec;
  if (typeof protocol === 'string' && !PORT_PROTOCOLS.has(protocol)) {
    for (const field of ['port', 'endPort'] as const) {
      if (spec[field] !== undefined) {
        out.push({
          path: join(path, field),
          message: `ports are only allowed for tcp, udp and sctp, not ${protocol}`,
        });
      }
    }
    return;
  }
  if (endPort !== undefined && port === undefined) {
    out.push({ path: join(path, 'endPort'), message: 'requires port' });
  } else if (typeof port === 'number' && typeof endPort === 'number' && endPort < port) {
    out.push({ path: join(path, 'endPort'), message: `must be at least port (${port})` });
  }
}

function familyName(range: IpRange): string {
  return range.family === 4 ? 'IPv4' : 'IPv6';
}

/** Checks CIDR texts; returns the ranges of the valid ones by index. */
function checkCidrs(values: unknown, path: string, out: Diagnostic[]): Array<IpRange | undefined> {
  return list(values).map((text, i) => {
    if (typeof text !== 'string') return undefined;
    const result = parseCidr(text);
    if (result.ok) return result.range;
    out.push({ path: join(path, i), message: result.reason });
    return undefined;
  });
}

function checkExcept(
  except: unknown,
  cidrs: Array<IpRange | undefined>,
  cidrTexts: unknown[],
  path: string,
  out: Diagnostic[],
): void {
  const known = cidrs.filter((r): r is IpRange => r !== undefined);
  // Without a valid cidr there is nothing to measure the exceptions against.
  const measurable = known.length === cidrs.length && known.length > 0;
  list(except).forEach((text, i) => {
    if (typeof text !== 'string') return;
    const parsed = parseCidr(text);
    if (!parsed.ok) {
      out.push({ path: join(path, i), message: parsed.reason });
      return;
    }
    const range = parsed.range;
    if (!measurable || known.some((c) => rangeContains(c, range))) return;
    const sameFamily = known.some((c) => c.family === range.family);
    const within = cidrTexts.filter((t) => typeof t === 'string').join(', ');
    out.push({
      path: join(path, i),
      message: sameFamily
        ? `'${text}' is not inside ${within}`
        : `'${text}' is ${familyName(range)} but ${within} is ${familyName(known[0]!)}`,
    });
  });
}

function checkPeer(peer: unknown, path: string, out: Diagnostic[]): void {
  if (!isObject(peer)) return;
  const kinds = (['selector', 'ipList', 'cidr'] as const).filter((k) => peer[k] !== undefined);
  if (kinds.length !== 1) {
    out.push({
      path,
      message:
        kinds.length === 0
          ? 'must have one of selector, ipList or cidr'
          : `must have exactly one of selector, ipList or cidr, not ${kinds.join(' and ')}`,
    });
  }
  checkSelector(peer.selector, join(path, 'selector'), out);
  if (peer.except !== undefined && peer.cidr === undefined) {
    out.push({ path: join(path, 'except'), message: 'is only allowed with cidr' });
    return;
  }
  if (typeof peer.cidr === 'string') {
    const result = parseCidr(peer.cidr);
    if (!result.ok) out.push({ path: join(path, 'cidr'), message: result.reason });
    checkExcept(
      peer.except,
      [result.ok ? result.range : undefined],
      [peer.cidr],
      join(path, 'except'),
      out,
    );
  }
}

function checkRule(rule: unknown, path: string, out: Diagnostic[]): void {
  if (!isObject(rule)) return;
  list(rule.peers).forEach((peer, i) => {
    checkPeer(peer, join(join(path, 'peers'), i), out);
  });
  list(rule.services).forEach((s, i) => {
    checkPortSpec(s, join(join(path, 'services'), i), out);
  });
}

/** Drops exact duplicates (schema and hand checks may both spot a problem). */
export function finish(diagnostics: Diagnostic[]): Diagnostic[] {
  const seen = new Set<string>();
  const out: Diagnostic[] = [];
  for (const d of diagnostics) {
    const key = `${d.path}\0${d.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(d);
  }
  return out;
}

export function validatePolicy(value: unknown, path = ''): Diagnostic[] {
  const out = schemaDiagnostics(PolicySchema, value, path);
  if (isObject(value)) {
    checkSelector(value.scope, join(path, 'scope'), out);
    for (const direction of ['ingress', 'egress'] as const) {
      list(value[direction]).forEach((rule, i) => {
        checkRule(rule, join(join(path, direction), i), out);
      });
    }
  }
  return finish(out);
}

export function validateService(value: unknown, path = ''): Diagnostic[] {
  const out = schemaDiagnostics(ServiceSchema, value, path);
  if (isObject(value)) {
    list(value.ports).forEach((spec, i) => {
      checkPortSpec(spec, join(join(path, 'ports'), i), out);
    });
  }
  return finish(out);
}

export function validateIpList(value: unknown, path = ''): Diagnostic[] {
  const out = schemaDiagnostics(IpListSchema, value, path);
  if (isObject(value)) {
    const cidrs = checkCidrs(value.cidrs, join(path, 'cidrs'), out);
    checkExcept(value.except, cidrs, list(value.cidrs), join(path, 'except'), out);
  }
  return finish(out);
}

export function validateWorkloadPatch(value: unknown, path = ''): Diagnostic[] {
  const out = schemaDiagnostics(WorkloadPatchSchema, value, path);
  if (isObject(value)) checkLabels(value.labels, join(path, 'labels'), out);
  return finish(out);
}

export function validateWorkload(value: unknown, path = ''): Diagnostic[] {
  const out = schemaDiagnostics(WorkloadSchema, value, path);
  if (isObject(value)) {
    checkLabels(value.labels, join(path, 'labels'), out);
    list(value.addresses).forEach((a, i) => {
      if (typeof a === 'string' && !parseAddress(a)) {
        out.push({
          path: join(join(path, 'addresses'), i),
          message: `'${a}' is not a valid IPv4 or IPv6 address (no prefix length)`,
        });
      }
    });
  }
  return finish(out);
}
