import { readdir, readFile, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import {
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parseAllDocuments,
  type Node as YamlNode,
} from 'yaml';
import { CliError } from './errors.js';
import { validators as defaultValidators, type Validate, type Validators } from './validate.js';

export type ResourceKind = 'IpList' | 'Service' | 'Policy' | 'Workload';

/** Ip lists and services first: policies name them, and the server may check references. */
export const APPLY_ORDER: readonly ResourceKind[] = ['IpList', 'Service', 'Policy', 'Workload'];

/** One resource from a file. For Workload, `body` is the PATCH body (labels and mode only). */
export interface ResourceDocument {
  kind: ResourceKind;
  name: string;
  body: Record<string, unknown>;
  file: string;
  line: number;
}

export interface FileDiagnostic {
  file: string;
  line: number;
  path: string;
  message: string;
}

export interface ParsedFiles {
  documents: ResourceDocument[];
  diagnostics: FileDiagnostic[];
}

const FILE_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);
const WORKLOAD_FIELDS = new Set(['name', 'labels', 'mode']);

export function formatDiagnostic(d: FileDiagnostic): string {
  return `${d.file}:${d.line}: ${d.path}: ${d.message}`;
}

/** Expands directories (their YAML and JSON files, not recursive, sorted) and parses all files. */
export async function loadDocuments(
  paths: string[],
  validators: Validators = defaultValidators,
): Promise<ParsedFiles> {
  const files: string[] = [];
  for (const path of paths) {
    const info = await stat(path).catch((cause) => {
      throw new CliError('USAGE', `cannot read ${path}`, { cause });
    });
    if (info.isDirectory()) {
      const names = (await readdir(path)).filter((n) => FILE_EXTENSIONS.has(extname(n))).sort();
      files.push(...names.map((n) => join(path, n)));
    } else {
      files.push(path);
    }
  }
  if (files.length === 0) throw new CliError('USAGE', 'no .yaml, .yml or .json files found');
  const result: ParsedFiles = { documents: [], diagnostics: [] };
  for (const file of files) {
    const parsed = parseDocuments(file, await readFile(file, 'utf8'), validators);
    result.documents.push(...parsed.documents);
    result.diagnostics.push(...parsed.diagnostics);
  }
  result.diagnostics.push(...findDuplicates(result.documents));
  return result;
}

/**
 * Parses one file of `---`-separated documents (or a top-level list of them) and validates
 * each, pinning every diagnostic to the line of the offending field.
 */
export function parseDocuments(
  file: string,
  text: string,
  validators: Validators = defaultValidators,
): ParsedFiles {
  const lineCounter = new LineCounter();
  const lineOf = (offset: number | undefined) => lineCounter.linePos(offset ?? 0).line;
  const result: ParsedFiles = { documents: [], diagnostics: [] };
  const report = (line: number, path: string, message: string) =>
    result.diagnostics.push({ file, line, path, message });

  for (const doc of parseAllDocuments(text, { lineCounter })) {
    if (doc.errors.length > 0) {
      for (const e of doc.errors) report(lineOf(e.pos[0]), '(yaml)', e.message.split('\n')[0]!);
      continue;
    }
    const root = doc.contents;
    if (root === null || (isScalar(root) && root.value === null)) continue; // empty document
    // Whole-document conversion so that aliases resolve against their anchors.
    const js = doc.toJS() as unknown;
    const items = isSeq(root) ? (root.items as YamlNode[]) : [root];
    items.forEach((node, index) => {
      const prefix = isSeq(root) ? `[${index}]` : '';
      const value = isSeq(root) ? (js as unknown[])[index] : js;
      const reportAt = (path: string, message: string) =>
        report(lineOf(locate(node, path)), joinPath(prefix, path), message);
      const resource = toResource(value, validators, reportAt);
      if (resource) result.documents.push({ ...resource, file, line: lineOf(node.range?.[0]) });
    });
  }
  // Stable sort: problems of one document in the order of its lines.
  result.diagnostics.sort((a, b) => a.line - b.line);
  return result;
}

function toResource(
  value: unknown,
  validators: Validators,
  report: (path: string, message: string) => void,
): Omit<ResourceDocument, 'file' | 'line'> | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    report('', 'a document must be a mapping with `kind` and the resource fields');
    return undefined;
  }
  const { kind, ...body } = value as Record<string, unknown>;
  let validate: Validate;
  let payload: Record<string, unknown> = body;
  let ok = true;
  switch (kind) {
    case 'Policy':
      validate = validators.policy;
      break;
    case 'Service':
      validate = validators.service;
      break;
    case 'IpList':
      validate = validators.ipList;
      break;
    case 'Workload': {
      const extra = Object.keys(body).filter((k) => !WORKLOAD_FIELDS.has(k));
      for (const k of extra) report(k, 'a Workload document may set only labels and mode');
      if (extra.length > 0) ok = false;
      payload = {};
      if ('labels' in body) payload.labels = body.labels;
      if ('mode' in body) payload.mode = body.mode;
      validate = validators.workloadPatch;
      break;
    }
    case undefined:
      report('', 'missing `kind` (Policy, Service, IpList or Workload)');
      return undefined;
    default:
      report(
        'kind',
        `unknown kind ${JSON.stringify(kind)}: use Policy, Service, IpList or Workload`,
      );
      return undefined;
  }
  const name = body.name;
  if (typeof name !== 'string' || name === '') {
    report('name', 'must be a non-empty string');
    ok = false;
  }
  const seen = new Set<string>();
  for (const d of validate(payload, '')) {
    const path = d.path.replace(/^\./, '');
    // The fallback validators and policy's may both flag a missing name: say it once.
    if (path === 'name' && !ok) continue;
    const key = `${path}\0${d.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    report(path, d.message);
    ok = false;
  }
  return ok ? { kind, name: name as string, body: payload } : undefined;
}

function findDuplicates(documents: ResourceDocument[]): FileDiagnostic[] {
  const first = new Map<string, ResourceDocument>();
  const out: FileDiagnostic[] = [];
  for (const doc of documents) {
    const key = `${doc.kind}/${doc.name}`;
    const prior = first.get(key);
    if (prior) {
      out.push({
        file: doc.file,
        line: doc.line,
        path: 'name',
        message: `${doc.kind} ${JSON.stringify(doc.name)} is also defined at ${prior.file}:${prior.line}`,
      });
    } else {
      first.set(key, doc);
    }
  }
  return out;
}

function joinPath(prefix: string, path: string): string {
  if (path === '') return prefix || '(document)';
  return prefix ? `${prefix}.${path}` : path;
}

/** Splits `ingress[0].labels["app.io/x"]` into `['ingress', 0, 'labels', 'app.io/x']`. */
export function splitPath(path: string): Array<string | number> {
  const out: Array<string | number> = [];
  for (const m of path.matchAll(/([^.[\]"]+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]/g)) {
    if (m[2] !== undefined) out.push(Number(m[2]));
    else if (m[3] !== undefined) out.push(JSON.parse(m[3]) as string);
    else out.push(m[1]!);
  }
  return out;
}

/**
 * The source offset of the deepest node along `path` that exists: for a field, its key (the
 * value of a block mapping starts a line later); for a missing field, its parent.
 */
function locate(root: YamlNode, path: string): number | undefined {
  let node: unknown = root;
  let offset = root.range?.[0];
  for (const segment of splitPath(path)) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === segment);
      if (!pair) break;
      offset = (pair.key as YamlNode).range?.[0] ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof segment === 'number') {
      const item = node.items[segment] as YamlNode | undefined;
      if (!item) break;
      offset = item.range?.[0] ?? offset;
      node = item;
    } else {
      break;
    }
  }
  return offset;
}
