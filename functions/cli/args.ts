/**
 * Command-line parsing that accepts Dimagi's `commcare-export` (DET) command line unchanged.
 *
 * DET uses Python's argparse, so we accept what argparse accepts: `--flag value`, `--flag=value`, and any
 * unambiguous prefix of a long flag (`--proj demo`). Our own flags sit beside DET's.
 */

export type FlagKind = 'string' | 'boolean' | 'list';

export interface FlagSpec {
  readonly name: string;
  readonly kind: FlagKind;
  readonly help: string;
  /** Shown in help; DET's default where DET has one. */
  readonly defaultText?: string;
  /** True for flags DET has (documentation only). */
  readonly det?: boolean;
}

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export type ParsedFlags = Record<string, string | boolean | string[] | undefined>;

export interface ParsedArgs {
  readonly flags: ParsedFlags;
  readonly positionals: string[];
}

/** Parses argv against the specs; throws UsageError naming the flag on anything unknown or malformed. */
export function parseArgs(argv: readonly string[], specs: readonly FlagSpec[]): ParsedArgs {
  const flags: ParsedFlags = {};
  const positionals: string[] = [];
  const byName = new Map(specs.map((s) => [s.name, s]));
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--') || arg === '--') {
      if (arg.startsWith('-') && arg.length > 1 && arg !== '-') {
        throw new UsageError(`unknown option "${arg}"; options are long flags like --project`);
      }
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const rawName = eq >= 0 ? arg.slice(2, eq) : arg.slice(2);
    const spec = resolveFlag(rawName, byName);
    let value: string | undefined = eq >= 0 ? arg.slice(eq + 1) : undefined;
    if (spec.kind === 'boolean') {
      if (value !== undefined) throw new UsageError(`option --${spec.name} takes no value (got "${value}")`);
      flags[spec.name] = true;
      continue;
    }
    if (value === undefined) {
      const next = argv[i + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) {
        throw new UsageError(`option --${spec.name} expects a value`);
      }
      value = next;
      i++;
    }
    if (spec.kind === 'list') {
      const existing = flags[spec.name];
      flags[spec.name] = [...(Array.isArray(existing) ? existing : []), value];
    } else {
      flags[spec.name] = value;
    }
  }
  return { flags, positionals };
}

function resolveFlag(rawName: string, byName: ReadonlyMap<string, FlagSpec>): FlagSpec {
  const exact = byName.get(rawName);
  if (exact) return exact;
  // argparse's allow_abbrev: an unambiguous prefix selects the flag.
  const candidates = [...byName.keys()].filter((name) => name.startsWith(rawName));
  if (candidates.length === 1) return byName.get(candidates[0] as string) as FlagSpec;
  if (candidates.length > 1) {
    throw new UsageError(
      `option --${rawName} is ambiguous: could be ${candidates.map((c) => `--${c}`).join(', ')}`,
    );
  }
  throw new UsageError(`unknown option --${rawName}; run "ccexport --help" for the list`);
}

export function stringFlag(flags: ParsedFlags, name: string): string | undefined {
  const value = flags[name];
  return typeof value === 'string' ? value : undefined;
}

export function booleanFlag(flags: ParsedFlags, name: string): boolean {
  return flags[name] === true;
}

export function integerFlag(flags: ParsedFlags, name: string, min: number, max: number): number | undefined {
  const text = stringFlag(flags, name);
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`option --${name} expects a whole number from ${min} to ${max} (got "${text}")`);
  }
  return value;
}

/**
 * The flags of a command that takes no positional argument, or null once `--help` has printed the
 * command's help to `out` (the command then exits 0).
 */
export function commandFlags(
  argv: readonly string[],
  specs: readonly FlagSpec[],
  title: string,
  out: { write(text: string): unknown },
): ParsedFlags | null {
  const { flags, positionals } = parseArgs(argv, specs);
  if (booleanFlag(flags, 'help')) {
    out.write(formatHelp(title, specs));
    return null;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  return flags;
}

export function formatHelp(title: string, specs: readonly FlagSpec[]): string {
  const width = Math.max(...specs.map((s) => s.name.length + (s.kind === 'boolean' ? 0 : 6))) + 4;
  const lines = specs.map((s) => {
    const left = `  --${s.name}${s.kind === 'boolean' ? '' : ' VALUE'}`;
    const def = s.defaultText ? ` (default: ${s.defaultText})` : '';
    return `${left.padEnd(width + 2)}${s.help}${def}`;
  });
  return `${title}\n\n${lines.join('\n')}\n`;
}
