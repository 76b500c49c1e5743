import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatDiagnostic, loadDocuments, parseDocuments, splitPath } from './documents.js';
import { type Validators, validators } from './validate.js';

const lines = (text: string, v?: Validators) =>
  parseDocuments('f.yaml', text, v).diagnostics.map(formatDiagnostic);

describe('parseDocuments', () => {
  it('strips kind and keeps the rest of the resource, with the line each document starts on', () => {
    const { documents, diagnostics } = parseDocuments(
      'f.yaml',
      '# header\nkind: Service\nname: dns\nports: [{protocol: udp, port: 53}]\n---\n---\nkind: IpList\nname: vpn\ncidrs: [10.8.0.0/16]\n',
    );
    expect(diagnostics).toEqual([]);
    expect(documents).toEqual([
      {
        kind: 'Service',
        name: 'dns',
        body: { name: 'dns', ports: [{ protocol: 'udp', port: 53 }] },
        file: 'f.yaml',
        line: 2,
      },
      {
        kind: 'IpList',
        name: 'vpn',
        body: { name: 'vpn', cidrs: ['10.8.0.0/16'] },
        file: 'f.yaml',
        line: 7,
      },
    ]);
  });

  it('pins each diagnostic path to the line of its field, quoted label keys included', () => {
    // A validator that flags fixed paths isolates the path-to-line mapping from policy's rules.
    const flag = (paths: string[]) => () => paths.map((path) => ({ path, message: 'bad' }));
    const v: Validators = {
      ...validators,
      policy: flag(['egress[1].peers[0].cidr', 'egress[3]', 'scope.matchLabels["app.io/name"]']),
    };
    const text = [
      'kind: Policy', // 1
      'name: p', // 2
      'scope:', // 3
      '  matchLabels:', // 4
      '    app.io/name: x', // 5
      'egress:', // 6
      '  - action: allow', // 7
      '    peers: [{cidr: 10.0.0.0/8}]', // 8
      '  - action: deny', // 9
      '    peers:', // 10
      '      - cidr: 10.1.0.0/16', // 11
    ].join('\n');
    expect(lines(text, v)).toEqual([
      'f.yaml:5: scope.matchLabels["app.io/name"]: bad',
      'f.yaml:6: egress[3]: bad', // no such element: the line of its nearest existing parent
      'f.yaml:11: egress[1].peers[0].cidr: bad',
    ]);
  });

  it('reports kind, name and workload field problems itself', () => {
    expect(
      lines(
        'name: x\n---\nkind: Gadget\nname: y\n---\nkind: Service\nports: [{protocol: icmp}]\n---\n- 1\n',
      ),
    ).toEqual([
      'f.yaml:1: (document): missing `kind` (Policy, Service, IpList or Workload)',
      'f.yaml:3: kind: unknown kind "Gadget": use Policy, Service, IpList or Workload',
      'f.yaml:6: name: must be a non-empty string',
      'f.yaml:9: [0]: a document must be a mapping with `kind` and the resource fields',
    ]);
  });

  it('reports YAML syntax errors with their line', () => {
    const out = lines('kind: IpList\nname: a\ncidrs: [10.0.0.0/8\n');
    expect(out.length).toBeGreaterThan(0);
    expect(out[0]).toMatch(/^f\.yaml:\d+: \(yaml\): /);
  });

  it('turns a workload document into a labels/mode patch', () => {
    const { documents } = parseDocuments(
      'w.yaml',
      'kind: Workload\nname: db-1\nlabels: {app: db}\nmode: {ingress: enforce}\n',
    );
    expect(documents[0]).toMatchObject({
      kind: 'Workload',
      name: 'db-1',
      body: { labels: { app: 'db' }, mode: { ingress: 'enforce' } },
    });
  });
});

describe('loadDocuments', () => {
  it('reads the YAML and JSON files of a directory in name order and flags duplicates', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bulkhead-docs-'));
    try {
      await mkdir(join(dir, 'sub'));
      await writeFile(join(dir, 'b.json'), '{"kind":"IpList","name":"x","cidrs":["10.0.0.0/8"]}');
      await writeFile(join(dir, 'a.yaml'), 'kind: IpList\nname: x\ncidrs: [10.2.0.0/16]\n');
      await writeFile(join(dir, 'sub', 'c.yaml'), 'kind: IpList\nname: y\ncidrs: []\n');
      const { documents, diagnostics } = await loadDocuments([dir]);
      expect(documents.map((d) => d.file)).toEqual([join(dir, 'a.yaml'), join(dir, 'b.json')]);
      expect(diagnostics.map(formatDiagnostic)).toEqual([
        `${join(dir, 'b.json')}:1: name: IpList "x" is also defined at ${join(dir, 'a.yaml')}:1`,
      ]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('splitPath', () => {
  it('splits names, indexes and quoted keys', () => {
    expect(splitPath('a.b[2]["x.y/z"].c')).toEqual(['a', 'b', 2, 'x.y/z', 'c']);
    expect(splitPath('')).toEqual([]);
  });
});

describe('YAML features', () => {
  it('resolves anchors and aliases across a document', () => {
    const { documents, diagnostics } = parseDocuments(
      'a.yaml',
      'kind: Policy\nname: p\nscope:\n  matchLabels: &web {app: web}\ningress:\n  - action: allow\n    peers: [{selector: {matchLabels: *web}}]\n',
    );
    expect(diagnostics).toEqual([]);
    expect(documents[0]!.body.ingress).toEqual([
      { action: 'allow', peers: [{ selector: { matchLabels: { app: 'web' } } }] },
    ]);
  });
});
