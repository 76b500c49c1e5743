import { describe, expect, it } from 'vitest';
import {
  escapeCefHeader,
  escapeCefValue,
  escapeSdValue,
  formatCef,
  formatSyslog,
  octetFrame,
} from './format.js';
import type { AgentEvent, AggregatedFlow, AuditEvent } from './types.js';

const at = new Date('2026-03-01T12:00:00.250Z');
const flow: AggregatedFlow = {
  kind: 'flow',
  at,
  firstAt: new Date('2026-03-01T11:59:55.000Z'),
  verdict: 'denied',
  workload: 'db-1',
  direction: 'ingress',
  src: '10.0.0.5',
  dst: '10.0.0.9',
  protocol: 'tcp',
  port: 5432,
  ruleId: 'r7',
  connections: 3,
  events: 2,
  ports: [22, 5432],
  portCount: 2,
  ruleIds: ['r7'],
};
const id = { hostname: 'cp-1', procId: '42', version: '0.1.0' };

describe('CEF', () => {
  it('escapes backslash and pipe in the header, and line breaks become spaces', () => {
    expect(escapeCefHeader('a|b\\c\nd')).toBe('a\\|b\\\\c d');
  });

  it('escapes backslash, equals and line breaks in extension values, but not pipes', () => {
    expect(escapeCefValue('k=v\\x|y\r\nz')).toBe('k\\=v\\\\x|y\\r\\nz');
  });

  it('writes the header and the common extension keys of a denied flow', () => {
    expect(formatCef(flow, '0.1.0')).toBe(
      'CEF:0|Bulkhead|Bulkhead|0.1.0|FLOW_DENIED|Flow denied|7|src=10.0.0.5 dst=10.0.0.9 dpt=5432 ' +
        'proto=tcp act=denied cnt=3 deviceDirection=0 cs1Label=rule cs1=r7 cs2Label=workload ' +
        'cs2=db-1 cs3Label=ports cs3=22,5432 cn1Label=distinctPorts cn1=2 cn2Label=events cn2=2 ' +
        `start=${Date.parse('2026-03-01T11:59:55.000Z')} end=${at.getTime()} rt=${at.getTime()}`,
    );
  });

  it('uses the IPv6 keys for IPv6 peers', () => {
    const cef = formatCef({ ...flow, src: 'fd00::5', dst: 'fd00::9' }, '0.1.0');
    expect(cef).toContain('|c6a2=fd00::5 c6a3=fd00::9 dpt=5432 ');
    expect(cef).not.toMatch(/ src=| dst=/);
  });

  it('escapes hostile audit fields so they cannot forge keys or header fields', () => {
    const audit: AuditEvent = {
      kind: 'audit',
      at,
      actor: 'eve act=allow',
      action: 'policy|update',
      target: 'p\\1\nsrc=1.2.3.4',
      details: { note: 'x=y' },
    };
    const cef = formatCef(audit, '0.1.0');
    // Pipes need no escape in the extension (CEF spec), so only the header split is fixed.
    expect(cef.split(/(?<!\\)\|/).slice(0, 7)).toEqual([
      'CEF:0',
      'Bulkhead',
      'Bulkhead',
      '0.1.0',
      'AUDIT',
      'Audit: policy\\|update',
      '3',
    ]);
    expect(cef).toContain('|Audit: policy\\|update|');
    expect(cef).toContain('suser=eve act\\=allow act=policy|update');
    expect(cef).toContain('cs1=p\\\\1\\nsrc\\=1.2.3.4');
    expect(cef).toContain('msg={"note":"x\\=y"}');
    expect(cef).not.toContain('\n');
  });

  it('survives audit details that JSON cannot encode', () => {
    const details: Record<string, unknown> = { n: 1n };
    expect(
      formatCef({ kind: 'audit', at, actor: 'a', action: 'b', target: 'c', details }, '1'),
    ).toContain('msg="[unserializable]"');
  });
});

describe('RFC 5424', () => {
  it('computes PRI from facility and severity and writes header, SD and message', () => {
    const line = formatSyslog(flow, 16, 'json', id);
    // local0 (16) * 8 + warning (4) = 132
    expect(
      line.startsWith(
        '<132>1 2026-03-01T12:00:00.250Z cp-1 bulkhead 42 FLOW_DENIED [bulkhead@32473 verdict="denied" workload="db-1" ',
      ),
    ).toBe(true);
    const json = JSON.parse(line.slice(line.indexOf('] ') + 2));
    expect(json).toMatchObject({
      host: 'cp-1',
      msgId: 'FLOW_DENIED',
      src: '10.0.0.5',
      portCount: 2,
    });
    expect(formatSyslog({ ...flow, verdict: 'would-deny' }, 4, 'cef', id)).toMatch(
      /^<37>1 \S+ cp-1 bulkhead 42 FLOW_WOULD_DENY /,
    );
    expect(
      formatSyslog({ kind: 'audit', at, actor: 'a', action: 'b', target: 'c' }, 23, 'cef', id),
    ).toMatch(
      /^<190>1 \S+ cp-1 bulkhead 42 AUDIT \[bulkhead@32473 actor="a" action="b" target="c"\] CEF:0\|/,
    );
  });

  it('escapes quote, backslash and bracket in SD values', () => {
    expect(escapeSdValue('a"b\\c]d')).toBe('a\\"b\\\\c\\]d');
    const line = formatSyslog(
      { kind: 'audit', at, actor: 'x"] [evil@1 a="b', action: 'b', target: 'c' },
      16,
      'json',
      id,
    );
    expect(line).toContain('actor="x\\"\\] [evil@1 a=\\"b"');
  });

  it('keeps header fields free of spaces', () => {
    const line = formatSyslog(flow, 16, 'cef', { ...id, hostname: 'my host' });
    expect(line.split(' ')[2]).toBe('my_host');
  });

  it('frames by octets, not characters', () => {
    expect(octetFrame('héllo').toString()).toBe('6 héllo');
  });
});

describe('agent events', () => {
  const tampered: AgentEvent = {
    kind: 'agent-event',
    at,
    workload: 'db-1',
    agentId: 'a-1',
    code: 'DATAPLANE_TAMPERED',
    message: 'table inet bulkhead changed outside the agent; repaired',
    attributes: { chains: 'input', what: 'rule' },
  };

  it('go out under their own code with the workload, agent and attributes', () => {
    const line = formatSyslog(tampered, 16, 'json', id);
    expect(line).toMatch(/^<132>1 \S+ cp-1 bulkhead 42 DATAPLANE_TAMPERED \[bulkhead@32473 /);
    expect(line).toContain('workload="db-1" agent="a-1" code="DATAPLANE_TAMPERED"');
    expect(line).toContain('attr.chains="input"');
    const json = JSON.parse(line.slice(line.indexOf('] ') + 2));
    expect(json).toMatchObject({ msgId: 'DATAPLANE_TAMPERED', workload: 'db-1', attributes: {} });
    expect(json.attributes).toEqual({ chains: 'input', what: 'rule' });
    const cef = formatCef(tampered, '0.1.0');
    expect(cef).toMatch(
      /^CEF:0\|Bulkhead\|Bulkhead\|0\.1\.0\|DATAPLANE_TAMPERED\|Agent: DATAPLANE_TAMPERED\|8\|/,
    );
    expect(cef).toContain('dhost=db-1');
  });

  it('cannot forge a header with the code an agent chose', () => {
    const line = formatSyslog({ ...tampered, code: 'X Y\n<13>1 forged' }, 16, 'json', id);
    expect(line.split(' ')[5]).toBe('X_Y_<13>1_forged');
  });
});
