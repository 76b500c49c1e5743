import type { Protocol } from './model.js';

/** IANA protocol numbers; `any` is 0, as in the wire contract. */
export const PROTOCOLS: Readonly<Record<Protocol, number>> = Object.freeze({
  tcp: 6,
  udp: 17,
  sctp: 132,
  icmp: 1,
  icmpv6: 58,
  any: 0,
});

/** Protocols with destination ports; every other protocol is matched as a whole. */
export const PORT_PROTOCOL_NUMBERS: readonly number[] = [6, 17, 132];

/** Plain code-unit order, so rule order never depends on the locale. */
export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
