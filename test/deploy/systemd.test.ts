import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEPLOY, helpOf, run, unknownFlags } from './tools.js';

const UNITS = {
  'bulkhead-agent.service': 'packages/agent/dist/main.js',
  'bulkhead-agent-restore.service': 'packages/agent/dist/main.js',
  'bulkhead-control-plane.service': 'packages/control-plane/dist/main.js',
} as const;
/** Oneshot units: they run once and exit, so no restart policy. */
const ONESHOT = new Set<string>(['bulkhead-agent-restore.service']);

function directive(text: string, key: string): string[] {
  return [...text.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!);
}

describe.each(Object.entries(UNITS))('%s', (unit, main) => {
  const path = join(DEPLOY, 'systemd', unit);
  const text = readFileSync(path, 'utf8');

  it('passes systemd-analyze verify with no warning', () => {
    // verify exits 0 on unknown keys and unparsable values; only its silence means clean.
    const r = run('systemd-analyze', ['verify', '--man=no', path]);
    expect(r.stderr + r.stdout).toBe('');
    expect(r.code).toBe(0);
  });

  it('has an offline exposure score of at most 2.5 (systemd-analyze security)', () => {
    const r = run('systemd-analyze', [
      'security',
      '--offline=yes',
      '--threshold=25',
      '--no-pager',
      path,
    ]);
    expect(
      r.code,
      r.stdout
        .split('\n')
        .filter((l) => l.includes('Overall'))
        .join(),
    ).toBe(0);
  });

  it('is hardened: no privilege gain, read-only system, on-failure restarts (services)', () => {
    const restarts = ONESHOT.has(unit)
      ? [['Type', 'oneshot']]
      : [
          ['Restart', 'on-failure'],
          ['RestartPreventExitStatus', '2'],
        ];
    for (const [key, value] of [
      ['NoNewPrivileges', 'yes'],
      ['ProtectSystem', 'strict'],
      ['ProtectHome', 'yes'],
      ['PrivateTmp', 'yes'],
      ['StateDirectoryMode', '0700'],
      ...restarts,
    ]) {
      expect(directive(text, key!), key).toEqual([value]);
    }
  });

  it('passes only flags the program knows', () => {
    const exec = text.match(/^ExecStart=((?:.*\\\n)*.*)$/m)![1]!;
    const words = exec.split(/\s+/);
    expect(words.filter((w) => w.startsWith('--')).length).toBeGreaterThanOrEqual(2);
    expect(unknownFlags(words, helpOf(main))).toEqual([]);
  });
});

describe('capabilities', () => {
  const caps = (unit: string) =>
    directive(readFileSync(join(DEPLOY, 'systemd', unit), 'utf8'), 'CapabilityBoundingSet');

  it('the agent keeps CAP_NET_ADMIN only (nftables over netlink)', () => {
    expect(caps('bulkhead-agent.service')).toEqual(['CAP_NET_ADMIN']);
  });

  it('the boot loader keeps CAP_NET_ADMIN only and opens no IP socket', () => {
    expect(caps('bulkhead-agent-restore.service')).toEqual(['CAP_NET_ADMIN']);
    const text = readFileSync(join(DEPLOY, 'systemd', 'bulkhead-agent-restore.service'), 'utf8');
    expect(directive(text, 'RestrictAddressFamilies')).toEqual(['AF_NETLINK AF_UNIX']);
  });

  it('the control plane keeps none', () => {
    expect(caps('bulkhead-control-plane.service')).toEqual(['']);
  });
});

describe('bulkhead-agent-restore.service ordering', () => {
  const text = readFileSync(join(DEPLOY, 'systemd', 'bulkhead-agent-restore.service'), 'utf8');

  it('runs early, before the network and the agent', () => {
    expect(directive(text, 'DefaultDependencies')).toEqual(['no']);
    expect(directive(text, 'After')).toEqual(['local-fs.target']);
    expect(directive(text, 'Wants')).toEqual(['network-pre.target']);
    const before = directive(text, 'Before').join(' ').split(/\s+/);
    expect(before).toContain('network-pre.target');
    expect(before).toContain('bulkhead-agent.service');
    expect(text).toMatch(/--restore-only/);
  });
});
