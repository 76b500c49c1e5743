import type { MapNode } from '@bulkhead/api';
import { describe, expect, it } from 'vitest';
import { layoutMap } from './map-layout.js';

const group = (id: string): MapNode => ({ id, kind: 'group', name: id });

describe('layoutMap', () => {
  it('places every node once, inside the canvas, none on another', () => {
    const nodes = [
      ...['c', 'a', 'b', 'd'].map(group),
      { id: 'ip-list:office', kind: 'ip-list', name: 'office' } as MapNode,
      { id: 'external:8.8.8.8', kind: 'external', name: '8.8.8.8' } as MapNode,
    ];
    const { width, height, placed } = layoutMap(nodes);
    expect([...placed.keys()].sort()).toEqual(nodes.map((n) => n.id).sort());
    const spots = new Set<string>();
    for (const { x, y } of placed.values()) {
      expect(x).toBeGreaterThan(0);
      expect(x).toBeLessThan(width);
      expect(y).toBeGreaterThan(0);
      expect(y).toBeLessThan(height);
      spots.add(`${x},${y}`);
    }
    expect(spots.size).toBe(nodes.length);
  });

  it('does not depend on the order nodes arrive in', () => {
    const a = layoutMap(['x', 'y', 'z'].map(group));
    const b = layoutMap(['z', 'x', 'y'].map(group));
    expect([...b.placed.entries()].sort()).toEqual([...a.placed.entries()].sort());
  });
});
