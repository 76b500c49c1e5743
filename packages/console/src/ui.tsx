// Pieces every view uses: loading an API answer into state, and showing its error. Text from the
// API is only ever rendered as JSX text or attribute values (Preact escapes both); nothing here
// or in the views may set innerHTML.
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { WINDOWS, type WindowId } from './filters.js';

export interface Loaded<T> {
  data?: T;
  error?: Error;
  reload(): void;
}

export function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<{ data?: T; error?: Error }>({});
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    load().then(
      (data) => live && setState({ data }),
      (error: Error) => live && setState({ error }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

export function Status<T>(props: { of: Loaded<T>; children: (data: T) => ComponentChildren }) {
  const { data, error } = props.of;
  if (error) {
    return (
      <p class="error" role="alert">
        {error.message}
      </p>
    );
  }
  if (data === undefined) return <p class="muted">Loading…</p>;
  return <>{props.children(data)}</>;
}

export const labelText = (labels: Record<string, string> | undefined) =>
  Object.entries(labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');

export const timeText = (iso: string | null | undefined) =>
  iso ? new Date(iso).toLocaleString() : '—';

/** A labelled text filter; `live` follows every keystroke, otherwise it applies on change. */
export function TextField(props: {
  label: string;
  name: string;
  value: string;
  set(value: string): void;
  placeholder?: string;
  live?: boolean;
}) {
  const set = (e: { currentTarget: HTMLInputElement }) => props.set(e.currentTarget.value);
  return (
    <label>
      {props.label}{' '}
      <input
        name={props.name}
        placeholder={props.placeholder}
        value={props.value}
        {...(props.live ? { onInput: set } : { onChange: set })}
      />
    </label>
  );
}

/** The time window a view reads flows from. */
export function WindowField(props: { label: string; value: WindowId; set(value: WindowId): void }) {
  return (
    <label>
      {props.label}{' '}
      <select
        name="window"
        value={props.value}
        onChange={(e) => props.set(e.currentTarget.value as WindowId)}
      >
        {WINDOWS.map((w) => (
          <option key={w.id} value={w.id}>
            {w.label}
          </option>
        ))}
      </select>
    </label>
  );
}
