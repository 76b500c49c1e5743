// The fake nftables' state (fake.ts): tables with their chains, rules, sets and counters, and a
// refusal carrying the kernel's errno text. Types and helpers only; must not apply or read.

export type Body = Record<string, unknown>;

export interface Rule {
  handle: number;
  body: Body;
}
export interface Chain {
  handle: number;
  body: Body;
  rules: Rule[];
}
export interface NamedSet {
  kind: 'set' | 'map';
  handle: number;
  body: Body;
  elems: unknown[];
}
export interface Counter {
  handle: number;
  body: Body;
  packets: number;
  bytes: number;
}
export interface Table {
  handle: number;
  body: Body;
  nextHandle: number;
  chains: Map<string, Chain>;
  // Sets and maps share one namespace in the kernel: both are sets.
  sets: Map<string, NamedSet>;
  counters: Map<string, Counter>;
}
export interface State {
  nextHandle: number;
  tables: Map<string, Table>;
}

export const ENOENT = 'No such file or directory';
export const EEXIST = 'File exists';
export const EBUSY = 'Device or resource busy';
export const EOPNOTSUPP = 'Operation not supported';
export const EINVAL = 'Invalid argument';
export const ENFILE = 'Too many open files in system';

export class Refusal extends Error {}

export function refuse(errno: string, why: string): never {
  throw new Refusal(`${errno} (${why})`);
}

export function tableKey(family: unknown, name: unknown): string {
  return `${family} ${name}`;
}

export function isRecord(v: unknown): v is Body {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
