import type { NftCommand, NftObject } from './driver.js';
import { NftError } from './errors.js';

/** Verbs a transaction may carry. Reads (`list`, and `reset` of whole tables) go through NftDriver.list. */
export type NftVerb = 'add' | 'create' | 'delete' | 'flush' | 'reset';

export const NFT_FAMILIES: readonly string[] = ['ip', 'ip6', 'inet', 'arp', 'bridge', 'netdev'];

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,63}$/;
const KINDS = ['table', 'chain', 'rule', 'set', 'map', 'element', 'counter'] as const;
type Kind = (typeof KINDS)[number];

// Which object kinds each verb accepts; mirrors what nft's JSON parser accepts for the kinds we use.
const VERB_KINDS: Record<NftVerb, readonly Kind[]> = {
  add: KINDS,
  create: KINDS,
  delete: KINDS,
  flush: ['table', 'chain', 'set', 'map'],
  reset: ['counter'],
};

/**
 * An ordered list of nftables commands applied as one atomic batch by NftDriver.apply.
 * Each call validates its object when queued and the first error is kept: a driver refuses
 * to run a transaction that holds one, so a bad object never reaches the kernel half-way.
 */
export class Transaction {
  // Each command is serialised once, when queued: that is the snapshot (later mutation by
  // the caller changes nothing), it proves the object is JSON, and the batch text is a join.
  // structuredClone was ~20x slower for a 20k-element set.
  readonly #texts: string[] = [];
  #error: NftError | undefined;

  add(obj: NftObject): this {
    return this.#queue('add', obj);
  }
  create(obj: NftObject): this {
    return this.#queue('create', obj);
  }
  delete(obj: NftObject): this {
    return this.#queue('delete', obj);
  }
  flush(obj: NftObject): this {
    return this.#queue('flush', obj);
  }
  reset(obj: NftObject): this {
    return this.#queue('reset', obj);
  }

  /**
   * Queue one element command from elements already serialised as JSON texts (one element
   * each, e.g. `[{"concat":[...]},{"jump":{"target":"r1"}}]`): a large set need not exist
   * twice, as objects and as text. Each text must stay inside its element (see confined), so
   * it cannot splice anything into the batch; its JSON syntax is nft's to check (a bad one
   * fails the whole batch, atomically).
   */
  elementsJson(
    verb: 'add' | 'delete',
    where: { family: string; table: string; name: string },
    texts: readonly string[],
  ): this {
    const target = { family: where.family, table: where.table, name: where.name };
    return this.#queueWithElems(verb, 'element', target, texts);
  }

  /**
   * `add` a set or map with its elements given as JSON texts (see elementsJson). nft loads
   * the elements of a declaration in one go, much faster than `add element` for a new
   * interval set.
   */
  addSetJson(kind: 'set' | 'map', body: Record<string, unknown>, texts: readonly string[]): this {
    return this.#queueWithElems('add', kind, body, texts);
  }

  #queueWithElems(
    verb: NftVerb,
    kind: string,
    body: Record<string, unknown>,
    texts: readonly string[],
  ): this {
    const index = this.#texts.length;
    let problem = validate(verb, { [kind]: { ...body, elem: [] } });
    for (let i = 0; problem === undefined && i < texts.length; i++) {
      if (!confined(texts[i] as string)) problem = `element ${i} is not one JSON value`;
    }
    let head = '';
    try {
      // `{"map":{...,"elem":null}}` without its trailing `null}}`: the elements go there.
      head = JSON.stringify({ [kind]: { ...body, elem: null } }).slice(0, -'null}}'.length);
    } catch (err) {
      problem ??= `object is not JSON: ${(err as Error).message}`;
    }
    this.#texts.push(
      problem === undefined ? `{"${verb}":${head}[${texts.join(',')}]}}}` : `{"${verb}":null}`,
    );
    if (this.#error === undefined && problem !== undefined) {
      this.#error = new NftError('NFT_INVALID', `command ${index} (${verb}): ${problem}`);
    }
    return this;
  }

  /** The queued commands, in order, as libnftables JSON commands (fresh copies). */
  get commands(): NftCommand[] {
    return this.#texts.map((t) => JSON.parse(t) as NftCommand);
  }
  /** The whole batch as libnftables JSON text: `{"nftables":[...commands]}`. */
  get json(): string {
    return `{"nftables":[${this.#texts.join(',')}]}`;
  }
  /** The first validation error, if any. */
  get error(): NftError | undefined {
    return this.#error;
  }
  /** Number of commands queued (including invalid ones). */
  get size(): number {
    return this.#texts.length;
  }

  #queue(verb: NftVerb, obj: NftObject): this {
    const index = this.#texts.length;
    let text: string | undefined;
    let problem: string | undefined;
    try {
      text = JSON.stringify({ [verb]: obj });
    } catch (err) {
      problem = `object is not JSON: ${(err as Error).message}`;
    }
    this.#texts.push(text ?? `{"${verb}":null}`);
    if (this.#error === undefined) {
      problem ??= validate(verb, obj);
      if (problem !== undefined) {
        this.#error = new NftError('NFT_INVALID', `command ${index} (${verb}): ${problem}`);
      }
    }
    return this;
  }
}

/**
 * True when `text` cannot reach outside the element it is put in: outside its strings (a
 * backslash escapes the next character), every bracket it closes it opened, none stays open,
 * nor does a string, and it holds no `,` or `:` of its own outside brackets. Then, in
 * `[t1,...,tn]`, the commas between the texts are the array's and each text is one element
 * (or a syntax error nft refuses). A scan without allocation: 100k JSON.parse calls, the
 * check before, cost ~0.3-0.8 s and the garbage of 100k parsed elements on a cold load.
 */
function confined(text: string): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) depth++;
    else if (c === 0x7d || c === 0x5d) {
      if (--depth < 0) return false;
    } else if (depth === 0 && (c === 0x2c || c === 0x3a)) return false;
  }
  return depth === 0 && !inString;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function validName(v: unknown): boolean {
  return typeof v === 'string' && NAME_RE.test(v);
}

function isHandle(v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v > 0;
}

/** Returns a description of what is wrong with `{kind: body}` under `verb`, or undefined. */
function validate(verb: NftVerb, obj: NftObject): string | undefined {
  if (!isRecord(obj)) return 'object must be a plain object like {table: {...}}';
  const keys = Object.keys(obj);
  if (keys.length !== 1) return `object must have exactly one kind key, got [${keys.join(', ')}]`;
  const kind = keys[0] as string;
  if (!(KINDS as readonly string[]).includes(kind)) return `unknown object kind '${kind}'`;
  if (!VERB_KINDS[verb].includes(kind as Kind)) return `'${verb}' does not apply to a ${kind}`;
  const body = obj[kind];
  if (!isRecord(body)) return `${kind} must be an object`;
  if (!NFT_FAMILIES.includes(body.family as string)) {
    return `${kind}.family must be one of ${NFT_FAMILIES.join('/')}, got ${JSON.stringify(body.family)}`;
  }
  const byHandle = verb === 'delete' && isHandle(body.handle);

  const need = (field: string): string | undefined =>
    validName(body[field])
      ? undefined
      : `${kind}.${field} must match ${NAME_RE.source}, got ${JSON.stringify(body[field])}`;

  if (kind === 'table') return byHandle ? undefined : need('name');

  const t = need('table');
  if (t) return t;

  switch (kind as Kind) {
    case 'chain':
      return byHandle ? undefined : (need('name') ?? validateBaseChain(body));
    case 'rule': {
      const c = need('chain');
      if (c) return c;
      if (verb === 'delete')
        return isHandle(body.handle) ? undefined : 'rule.handle is required to delete a rule';
      if (!Array.isArray(body.expr)) return 'rule.expr must be an array';
      return undefined;
    }
    case 'set':
    case 'map': {
      if (byHandle) return undefined;
      const n = need('name');
      if (n) return n;
      if (verb === 'add' || verb === 'create') {
        if (!validType(body.type)) return `${kind}.type must be a type name or an array of them`;
        if (kind === 'map' && !validType(body.map)) return 'map.map (the value type) is required';
        if (body.flags !== undefined && !isStringArray(body.flags))
          return `${kind}.flags must be an array of strings`;
      }
      return undefined;
    }
    case 'element': {
      const n = need('name');
      if (n) return n;
      if (!Array.isArray(body.elem)) return 'element.elem must be an array';
      return undefined;
    }
    case 'counter':
      return byHandle ? undefined : need('name');
    default:
      return undefined;
  }
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

function validType(v: unknown): boolean {
  return (typeof v === 'string' && v.length > 0) || (isStringArray(v) && v.length > 0);
}

function validateBaseChain(body: Record<string, unknown>): string | undefined {
  const base = ['type', 'hook', 'prio'].filter((k) => body[k] !== undefined);
  if (base.length === 0) {
    return body.policy === undefined ? undefined : 'chain.policy is only valid on a base chain';
  }
  if (base.length !== 3) return 'a base chain needs all of chain.type, chain.hook and chain.prio';
  if (typeof body.type !== 'string' || typeof body.hook !== 'string') {
    return 'chain.type and chain.hook must be strings';
  }
  if (typeof body.prio !== 'number' && typeof body.prio !== 'string') {
    return 'chain.prio must be a number or a priority name';
  }
  if (body.policy !== undefined && body.policy !== 'accept' && body.policy !== 'drop') {
    return "chain.policy must be 'accept' or 'drop'";
  }
  if (body.hook === 'ingress' || body.hook === 'egress') {
    if (typeof body.dev !== 'string' && !isStringArray(body.dev))
      return `a ${body.hook} chain needs chain.dev`;
  }
  return undefined;
}
