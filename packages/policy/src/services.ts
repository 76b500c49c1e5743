// What a rule's `services` cover, resolved once for both rule forms (compiled cells and
// group rules): every protocol, port ranges per port protocol, or other protocols whole.

import type { PolicyRule, PortSpec } from './model.js';
import { PORT_PROTOCOL_NUMBERS, PROTOCOLS } from './protocols.js';

export interface PortRange {
  from: number;
  to: number;
}

export interface ResolvedServices {
  /** Covers every protocol (no services, or a service with protocol `any`). */
  anyProtocol: boolean;
  /** Port protocols (6/17/132) to their normalized port ranges. */
  ports: Map<number, PortRange[]>;
  /** Other protocols, matched whole. */
  protocols: Set<number>;
}

const ALL_PORTS: PortRange = { from: 0, to: 65535 };

function normalizePorts(ranges: PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a.from - b.from || a.to - b.to);
  const out: PortRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.from <= last.to + 1) last.to = Math.max(last.to, r.to);
    else out.push({ ...r });
  }
  return out;
}

/** Resolves service names through `named` (validation guarantees they exist). */
export function resolveServices(
  services: PolicyRule['services'],
  named: (name: string) => readonly PortSpec[] | undefined,
): ResolvedServices {
  const out: ResolvedServices = { anyProtocol: false, ports: new Map(), protocols: new Set() };
  if (!services || services.length === 0) {
    out.anyProtocol = true;
    return out;
  }
  const specs = services.flatMap((s) => (typeof s === 'string' ? (named(s) ?? []) : [s]));
  for (const spec of specs) {
    const number = PROTOCOLS[spec.protocol];
    if (number === 0) {
      // Finer specs add nothing to a rule that already covers every protocol.
      return { anyProtocol: true, ports: new Map(), protocols: new Set() };
    }
    if (PORT_PROTOCOL_NUMBERS.includes(number)) {
      const range =
        spec.port === undefined ? ALL_PORTS : { from: spec.port, to: spec.endPort ?? spec.port };
      out.ports.set(number, [...(out.ports.get(number) ?? []), range]);
    } else {
      out.protocols.add(number);
    }
  }
  for (const [number, ranges] of out.ports) out.ports.set(number, normalizePorts(ranges));
  return out;
}
