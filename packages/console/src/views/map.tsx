// The dependency map: groups of workloads by label, IP lists and external peers, and the observed
// connections between them, each edge coloured by what the current revision says of it.
import type { MapView } from '@bulkhead/api';
import { useState } from 'preact/hooks';
import type { ConsoleApi } from '../api.js';
import { type EdgePair, filterMap, pairEdges, query, sinceOf, type WindowId } from '../filters.js';
import { layoutMap } from '../map-layout.js';
import { labelText, Status, TextField, useLoad, WindowField } from '../ui.js';

const POLICY_LEGEND = [
  ['allowed', 'allowed'],
  ['would-deny', 'would be denied (monitor mode)'],
  ['denied', 'denied'],
  ['not-covered', 'not covered by policy'],
] as const;

const pairText = (p: EdgePair) =>
  [
    `${p.from} → ${p.to}`,
    ...p.edges.map((e) => `${e.protocol}/${e.port}: ${e.policy}, ${e.connections} connections`),
  ].join('\n');

function MapGraph(props: { view: MapView; labelFilter: string }) {
  const { nodes, edges } = filterMap(props.view, props.labelFilter);
  if (nodes.length === 0) return <p class="muted">No flows in this window.</p>;
  const { width, height, placed } = layoutMap(nodes);
  return (
    <svg
      id="map"
      viewBox={`0 0 ${width} ${height}`}
      width={width}
      height={height}
      role="img"
      aria-label="dependency map"
    >
      <defs>
        {POLICY_LEGEND.map(([p]) => (
          <marker
            id={`arrow-${p}`}
            key={p}
            class={`arrow-${p}`}
            viewBox="0 0 10 10"
            refX="22"
            refY="5"
            markerWidth="8"
            markerHeight="8"
            orient="auto-start-reverse"
          >
            <path d="M 0 0 L 10 5 L 0 10 z" />
          </marker>
        ))}
      </defs>
      {pairEdges(edges).map((p) => {
        const a = placed.get(p.from);
        const b = placed.get(p.to);
        if (!a || !b) return null;
        return (
          <line
            key={`${p.from}|${p.to}`}
            class={`edge edge-${p.policy}`}
            data-from={p.from}
            data-to={p.to}
            data-policy={p.policy}
            x1={a.x}
            y1={a.y}
            x2={b.x}
            y2={b.y}
            marker-end={`url(#arrow-${p.policy})`}
          >
            <title>{pairText(p)}</title>
          </line>
        );
      })}
      {[...placed.values()].map(({ node, x, y }) => (
        <g key={node.id} class={`node node-${node.kind}`} data-id={node.id}>
          <circle cx={x} cy={y} r={14} />
          <text x={x} y={y + 30} text-anchor="middle">
            {node.name}
          </text>
          <title>
            {[node.id, labelText(node.labels), (node.workloads ?? []).join(', ')]
              .filter(Boolean)
              .join('\n')}
          </title>
        </g>
      ))}
    </svg>
  );
}

function EdgeTable(props: { view: MapView; labelFilter: string }) {
  const { nodes, edges } = filterMap(props.view, props.labelFilter);
  const name = new Map(nodes.map((n) => [n.id, n.name]));
  return (
    <table id="map-edges">
      <thead>
        <tr>
          <th>From</th>
          <th>To</th>
          <th>Service</th>
          <th>Policy</th>
          <th>Connections</th>
        </tr>
      </thead>
      <tbody>
        {edges.map((e) => (
          <tr key={`${e.from}|${e.to}|${e.protocol}|${e.port}`} data-policy={e.policy}>
            <td>{name.get(e.from) ?? e.from}</td>
            <td>{name.get(e.to) ?? e.to}</td>
            <td>
              {e.protocol}/{e.port}
            </td>
            <td>
              <span class={`verdict verdict-${e.policy}`}>{e.policy}</span>
            </td>
            <td>{e.connections}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function MapPage(props: { api: ConsoleApi }) {
  const [groupBy, setGroupBy] = useState('app,role');
  const [window, setWindow] = useState<WindowId>('7d');
  const [labelFilter, setLabelFilter] = useState('');
  const map = useLoad(
    () =>
      props.api.get<MapView>(`/v1/map${query({ groupBy, since: sinceOf(window, new Date()) })}`),
    [groupBy, window],
  );
  return (
    <section>
      <h2>Dependency map</h2>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <TextField label="Group by" name="groupBy" value={groupBy} set={setGroupBy} />
        <WindowField label="Time" value={window} set={setWindow} />
        <TextField
          label="Labels"
          name="labels"
          placeholder="app=shop,role"
          value={labelFilter}
          set={setLabelFilter}
          live
        />
      </form>
      <ul class="legend">
        {POLICY_LEGEND.map(([p, text]) => (
          <li key={p}>
            <span class={`swatch edge-${p}`} /> {text}
          </li>
        ))}
      </ul>
      <Status of={map}>
        {(view) => (
          <>
            <div class="map-frame">
              <MapGraph view={view} labelFilter={labelFilter} />
            </div>
            <EdgeTable view={view} labelFilter={labelFilter} />
          </>
        )}
      </Status>
    </section>
  );
}
