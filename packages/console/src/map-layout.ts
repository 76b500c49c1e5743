// Where the map's nodes sit: groups on a circle (sorted by id, so the same map always looks the
// same), IP lists and external peers on an outer ring. Pure geometry; the view draws it.
import type { MapNode } from '@bulkhead/api';

export interface Placed {
  node: MapNode;
  x: number;
  y: number;
}

export interface Layout {
  width: number;
  height: number;
  placed: Map<string, Placed>;
}

function ring(nodes: MapNode[], cx: number, cy: number, r: number, turn: number): Placed[] {
  return nodes.map((node, i) => {
    const a = turn + (2 * Math.PI * i) / Math.max(nodes.length, 1) - Math.PI / 2;
    return { node, x: Math.round(cx + r * Math.cos(a)), y: Math.round(cy + r * Math.sin(a)) };
  });
}

export function layoutMap(nodes: MapNode[]): Layout {
  const byId = (a: MapNode, b: MapNode) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const groups = nodes.filter((n) => n.kind === 'group').sort(byId);
  const outside = nodes.filter((n) => n.kind !== 'group').sort(byId);
  // Room for the labels grows with the number of nodes on the busier ring.
  const inner = Math.max(120, groups.length * 28);
  const outer = inner + (outside.length > 0 ? Math.max(110, outside.length * 12) : 0);
  const size = 2 * outer + 240;
  const c = size / 2;
  const placed = new Map<string, Placed>();
  const single = groups.length === 1 && outside.length === 0;
  for (const p of single ? [{ node: groups[0]!, x: c, y: c }] : ring(groups, c, c, inner, 0)) {
    placed.set(p.node.id, p);
  }
  for (const p of ring(outside, c, c, outer, Math.PI / Math.max(outside.length, 2))) {
    placed.set(p.node.id, p);
  }
  return { width: size, height: size, placed };
}
