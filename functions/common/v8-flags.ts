/**
 * V8 flags set while the process runs. Node leaves V8's flags writable after start
 * (`v8.setFlagsFromString`, documented as "use with care"); the flags set here are ones V8 reads when
 * it acts (at each collection, at each compilation), so they take effect from the next one. Each
 * caller explains its flag where it asks for it.
 */
import { setFlagsFromString } from 'node:v8';

const applied = new Set<string>();

/** Sets `flag` (e.g. `--liftoff-only`) for this process, once; later calls with it do nothing. */
export function applyV8Flag(flag: string): void {
  if (applied.has(flag)) return;
  applied.add(flag);
  setFlagsFromString(flag);
}
