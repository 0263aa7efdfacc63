/**
 * The sandbox's data, as ground truth for tests: deterministic from (seed, projects), generated lazily.
 */
import type { JsonObject } from '../common/json';
import { ProjectModel, type SandboxChange, type SandboxProject } from './records';

/** Resources the sandbox serves (the `ResourceName`s of functions/commcare/types.ts it implements). */
export type SandboxResource =
  | 'form'
  | 'case'
  | 'case-v2'
  | 'user'
  | 'web-user'
  | 'group'
  | 'location'
  | 'location-v2'
  | 'location_type'
  | 'application'
  | 'messaging-event'
  | 'ucr';

export const SANDBOX_RESOURCES: readonly SandboxResource[] = [
  'form',
  'case',
  'case-v2',
  'user',
  'web-user',
  'group',
  'location',
  'location-v2',
  'location_type',
  'application',
  'messaging-event',
  'ucr',
];

export interface DatasetOptions {
  /**
   * Whether live re-index events (records updated during a pull) exist. The server turns this on
   * when `liveReindexAfterRequests` is set; ground truth then includes them (the final visible state).
   * @default false
   */
  readonly liveReindex?: boolean;
}

export class UnknownProjectError extends Error {
  constructor(
    readonly project: string,
    known: readonly string[],
  ) {
    super(`Sandbox project '${project}' does not exist; expected one of: ${known.join(', ')}`);
    this.name = 'UnknownProjectError';
  }
}

export interface SandboxDataset {
  readonly seed: number;
  readonly projects: readonly SandboxProject[];
  readonly liveReindex: boolean;
  /** The generator behind one project (record builders and the timelines). */
  model(project: string): ProjectModel;
  /** Number of distinct records (ids) of a resource in its final state. */
  count(project: string, resource: SandboxResource): number;
  /** Final state: the latest version of each record, as [id, record] pairs, lazily. */
  finalState(project: string, resource: SandboxResource): Generator<[string, JsonObject]>;
  /**
   * What a full pull lists once every event is visible, in indexed_on order (form, case, case-v2): each
   * record once, at its latest version, since HQ's index holds one document per id. For the other
   * resources, their listing order. Lazy.
   */
  timeline(project: string, resource: SandboxResource): Generator<JsonObject>;
  /** Every version ever indexed, in indexed_on order (form, case, case-v2): the records' history. Lazy. */
  history(project: string, resource: 'form' | 'case' | 'case-v2'): Generator<JsonObject>;
  /**
   * Archives, unarchives or deletes records as HQ would (see `SandboxChange`); pages served from then
   * on show it, and `finalState`/`timeline`/`count` follow. Throws `SandboxChangeError` for an unknown
   * id or a form deleted without being archived first.
   */
  apply(project: string, change: SandboxChange): void;
}

function idOf(resource: SandboxResource, record: JsonObject): string {
  switch (resource) {
    case 'case-v2':
      return String(record.case_id);
    case 'location-v2':
      return String(record.location_id);
    default:
      return String(record.id);
  }
}

export function createDataset(
  seed: number,
  projects: readonly SandboxProject[],
  options: DatasetOptions = {},
): SandboxDataset {
  const liveReindex = options.liveReindex ?? false;
  const models = new Map<string, ProjectModel>();
  for (const project of projects) models.set(project.name, new ProjectModel(seed, project, liveReindex));

  const model = (project: string): ProjectModel => {
    const found = models.get(project);
    if (!found) throw new UnknownProjectError(project, [...models.keys()]);
    return found;
  };

  /** Listing of a non-event resource, index by index. */
  function* listing(m: ProjectModel, resource: SandboxResource): Generator<JsonObject> {
    switch (resource) {
      case 'user':
        for (let u = 0; u < m.mobileUsers; u++) if (m.userVisible(u)) yield m.user(u);
        return;
      case 'web-user':
        for (let u = 0; u < m.webUsers; u++) yield m.webUser(u);
        return;
      case 'group':
        for (let g = 0; g < m.groups; g++) yield m.group(g);
        return;
      case 'location':
        for (let l = 0; l < m.locations; l++) yield m.locationV1(l);
        return;
      case 'location-v2':
        for (let l = 0; l < m.locations; l++) yield m.locationV2(l);
        return;
      case 'location_type':
        for (let level = 0; level < m.locationTypeCount; level++) yield m.locationType(level);
        return;
      case 'application':
        yield m.application();
        return;
      case 'messaging-event':
        yield* m.messagingEvents.all();
        return;
      case 'ucr':
        yield* m.ucr.all();
        return;
      default:
        return;
    }
  }

  return {
    seed,
    projects,
    liveReindex,
    model,
    count(project, resource) {
      const m = model(project);
      if (m.changed) {
        let n = 0;
        for (const _ of this.finalState(project, resource)) n++;
        return n;
      }
      switch (resource) {
        case 'form':
          return m.forms.count;
        case 'case':
        case 'case-v2':
          return m.cases.count;
        case 'user':
          return m.mobileUsers;
        case 'web-user':
          return m.webUsers;
        case 'group':
          return m.groups;
        case 'location':
        case 'location-v2':
          return m.locations;
        case 'location_type':
          return m.locationTypeCount;
        case 'application':
          return 1;
        case 'messaging-event':
          return m.messagingEvents.count;
        case 'ucr':
          return m.ucr.count;
      }
    },
    *finalState(project, resource) {
      const m = model(project);
      if (resource === 'form' || resource === 'case' || resource === 'case-v2') {
        const t = resource === 'form' ? m.forms : m.cases;
        const visible = t.totalLength;
        const shown = (j: number) => (resource === 'form' ? m.formVisible(j) : m.caseVisible(j));
        for (let i = 0; i < t.count; i++) {
          const j = t.latest(i, visible);
          if (!shown(j)) continue;
          const kind = t.event(j).kind;
          const record =
            resource === 'form'
              ? m.form(i, j, kind)
              : resource === 'case'
                ? m.caseV1(i, j, kind)
                : m.caseV2(i, j, kind);
          yield [idOf(resource, record), record];
        }
        return;
      }
      for (const record of listing(m, resource)) yield [idOf(resource, record), record];
    },
    *history(project, resource) {
      const m = model(project);
      const t = resource === 'form' ? m.forms : m.cases;
      for (let j = 0; j < t.totalLength; j++) {
        const { record, kind } = t.event(j);
        yield resource === 'form'
          ? m.form(record, j, kind)
          : resource === 'case'
            ? m.caseV1(record, j, kind)
            : m.caseV2(record, j, kind);
      }
    },
    *timeline(project, resource) {
      const m = model(project);
      if (resource === 'form' || resource === 'case' || resource === 'case-v2') {
        const t = resource === 'form' ? m.forms : m.cases;
        const shown = (j: number) => (resource === 'form' ? m.formVisible(j) : m.caseVisible(j));
        for (let j = 0; j < t.totalLength; j++) {
          if (m.changed && !shown(j)) continue;
          if (j !== t.latest(t.event(j).record, t.totalLength)) continue;
          const { record, kind } = t.event(j);
          yield resource === 'form'
            ? m.form(record, j, kind)
            : resource === 'case'
              ? m.caseV1(record, j, kind)
              : m.caseV2(record, j, kind);
        }
        return;
      }
      yield* listing(m, resource);
    },
    apply(project, change) {
      model(project).apply(change);
    },
  };
}
