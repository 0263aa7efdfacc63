/**
 * CommCare-shaped records, each a pure function of (project, record index, event index). Shapes follow
 * commcare-hq: forms as `v0_4.XFormInstanceResource` serves them and cases as `v0_4.CommCareCaseResource`
 * (`corehq/apps/api/resources/v0_4.py`, with the examples in `corehq/apps/api/openapi/examples/`), case
 * v2 as `corehq/apps/hqcase/api/get_list.py`, users, groups and locations as `v0_5.py`.
 */
import type { JsonObject, JsonValue } from '../common/json';
import { MessagingEvents, UcrDataSource } from './cursor-resources';
import type { SandboxDetExport } from './det-exports';
import { hash, hashString, hex32, Rng, uuid } from './prng';
import { type EventKind, Timeline } from './timeline';

export interface SandboxProject {
  name: string;
  forms: number;
  cases: number;
  mobileUsers?: number;
  webUsers?: number;
  groups?: number;
  locations?: number;
  /** Share of records re-indexed later (0..1, clamped to 0.5), default 0.05. */
  reindexedShare?: number;
  /** How many consecutive records share one indexed_on value, default 3 (ties at page boundaries). */
  tieRun?: number;
  /** Messaging events (`messaging-event/v1`), default 120. */
  messagingEvents?: number;
  /** Rows of the project's one UCR data source (`ucr/v1/?data_source_id=`), default 150. */
  ucrRows?: number;
  /** Exports defined in HQ that the DET can run (`det_export_instance`); default: one form and one case export. */
  detExports?: readonly SandboxDetExport[];
}

/** Host that absolute resource URIs use when no request is at hand (ground truth built outside a request). */
export const DEFAULT_ORIGIN = 'http://127.0.0.1';

const DAY_MS = 86_400_000;
/** `YYYY-MM-DDT` of recent days, by day number since the epoch (a page's records share a few days). */
const dayPrefixes = new Map<number, string>();
const MAX_DAY_PREFIXES = 4096;

function two(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/**
 * Formats microseconds since the epoch as HQ does: `Z` with microseconds, or naive. The date comes from
 * `Date` once per day (kept), the time of day by arithmetic: a page of forms formats ~10 times a record,
 * and `toISOString` for each was a seventh of the sandbox's serving time.
 */
export function formatMicros(micros: number, zone: 'Z' | 'naive'): string {
  const ms = Math.floor(micros / 1000);
  const day = Math.floor(ms / DAY_MS);
  let prefix = dayPrefixes.get(day);
  if (prefix === undefined) {
    prefix = new Date(day * DAY_MS).toISOString().slice(0, -13); // 2024-01-01T
    if (dayPrefixes.size >= MAX_DAY_PREFIXES) dayPrefixes.clear();
    dayPrefixes.set(day, prefix);
  }
  const inDay = ms - day * DAY_MS;
  const seconds = Math.floor(inDay / 1000);
  const fraction = String((inDay % 1000) * 1000 + Math.floor(micros - ms * 1000)).padStart(6, '0');
  const time = `${two(Math.floor(seconds / 3600))}:${two(Math.floor(seconds / 60) % 60)}:${two(seconds % 60)}`;
  return `${prefix}${time}.${fraction}${zone === 'Z' ? 'Z' : ''}`;
}

const FIRST_NAMES = [
  'José',
  'Zoë',
  'अनीता',
  'Nguyễn Văn',
  'Amina',
  'Søren',
  'Chiamaka',
  'Łukasz',
  'राहुल',
  'Mary',
  "O'Neil",
  'Ōta',
] as const;
const LAST_NAMES = [
  'Álvarez',
  'Müller',
  'शर्मा',
  'An',
  'Okafor',
  'Kierkegaard',
  'Nwosu',
  'Wałęsa',
  'पटेल',
  'Smith',
  'Brennan',
  'Kenji',
] as const;
const VILLAGES = ['Kisumu', 'Ségou', 'वाराणसी', 'Nyeri', 'Mopti', 'Gulu', 'Tamale', 'São Tomé'] as const;
const SYMPTOMS = ['fever', 'cough', 'diarrhea', 'rash', 'fatigue'] as const;
const SERVICES = ['anc', 'pnc', 'immunization', 'nutrition', 'family_planning'] as const;
const NOTES = ['', 'Patient doing well.', 'रोगी ठीक है', 'Référé au centre de santé', 'follow up in 2 weeks'];

export interface FormType {
  readonly key: 'registration' | 'followup' | 'survey';
  readonly name: string;
  readonly xmlns: string;
  readonly questions: readonly { readonly path: string; readonly type: string; readonly label: string }[];
}

export const FORM_TYPES: readonly FormType[] = [
  {
    key: 'registration',
    name: 'Household Registration',
    xmlns: 'http://openrosa.org/formdesigner/5C1B5E2A-7F3D-4E11-9C2B-REGISTRATION',
    questions: [
      { path: '/data/household_name', type: 'Text', label: 'Household name' },
      { path: '/data/household_size', type: 'Int', label: 'Household size' },
      { path: '/data/services', type: 'MSelect', label: 'Services wanted' },
      { path: '/data/phone', type: 'PhoneNumber', label: 'Phone' },
      { path: '/data/location_info/village', type: 'Select', label: 'Village' },
      { path: '/data/location_info/gps', type: 'Geopoint', label: 'GPS' },
      { path: '/data/members/member_name', type: 'Text', label: 'Member name' },
      { path: '/data/members/age', type: 'Int', label: 'Age' },
      { path: '/data/members/sex', type: 'Select', label: 'Sex' },
    ],
  },
  {
    key: 'followup',
    name: 'Follow-up Visit',
    xmlns: 'http://openrosa.org/formdesigner/9A4E0B77-1D2C-4F5A-8B3E-FOLLOWUP',
    questions: [
      { path: '/data/visit_date', type: 'Date', label: 'Visit date' },
      { path: '/data/weight', type: 'Decimal', label: 'Weight (kg)' },
      { path: '/data/symptoms', type: 'MSelect', label: 'Symptoms' },
      { path: '/data/notes', type: 'Text', label: 'Notes' },
      { path: '/data/vitals/temperature', type: 'Decimal', label: 'Temperature' },
      { path: '/data/vitals/bp/systolic', type: 'Int', label: 'Systolic' },
      { path: '/data/vitals/bp/diastolic', type: 'Int', label: 'Diastolic' },
    ],
  },
  {
    key: 'survey',
    name: 'Nutrition Survey',
    xmlns: 'http://openrosa.org/formdesigner/3F6D2C11-8E4B-4A90-B1C7-SURVEY',
    questions: [
      { path: '/data/meal_count', type: 'Int', label: 'Meals yesterday' },
      { path: '/data/food_groups', type: 'MSelect', label: 'Food groups' },
      { path: '/data/comment', type: 'Text', label: 'टिप्पणी' },
      { path: '/data/children/child_name', type: 'Text', label: 'Child name' },
      { path: '/data/children/muac', type: 'Decimal', label: 'MUAC (cm)' },
    ],
  },
];

export const CASE_PROPERTIES = {
  household: ['household_size', 'village', 'phone', 'visit_count', 'last_visit'],
  person: ['age', 'sex', 'dob', 'weight', 'visit_count', 'last_visit'],
} as const;

const LOCATION_TYPES = [
  { code: 'country', name: 'Country' },
  { code: 'state', name: 'State' },
  { code: 'district', name: 'District' },
  { code: 'village', name: 'Village' },
] as const;

/**
 * A change applied while the sandbox runs, as HQ's web pages and data clean-up make them:
 * - `archive-form` / `unarchive-form`: the form's latest version is archived (or restored). With
 *   `reindex` (default) it comes back later in `indexed_on` order, as HQ's change feed re-indexes an
 *   archived form; `reindex: false` changes it in place, because HQ does not document that archiving
 *   changes `indexed_on` and an exporter must not rely on it.
 * - `delete-form`: an archived form disappears from every list (HQ deletes archived forms only).
 * - `delete-case`: the case disappears from every list (case v1 and v2).
 * - `delete-worker`: the mobile worker, every form it submitted and every case it owns disappear
 *   (HQ's user deletion tags the worker's forms and cases as deleted).
 */
export type SandboxChange =
  | { readonly kind: 'archive-form' | 'unarchive-form'; readonly id: string; readonly reindex?: boolean }
  | { readonly kind: 'delete-form'; readonly id: string }
  | { readonly kind: 'delete-case'; readonly id: string }
  | { readonly kind: 'delete-worker'; readonly userId: string };

/** A change the sandbox refuses (unknown id, deleting a form that is not archived). */
export class SandboxChangeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SandboxChangeError';
  }
}

/** One project's generators. Cheap facets (used by filters) are separate from full records. */
export class ProjectModel {
  readonly name: string;
  readonly salt: number;
  readonly forms: Timeline;
  readonly cases: Timeline;
  readonly mobileUsers: number;
  readonly webUsers: number;
  readonly groups: number;
  readonly locations: number;
  readonly appId: string;
  readonly buildId: string;
  /** Bumped by every applied change (part of the serve caches' keys). */
  generation = 0;
  /** Archived flag of each change event of the form timeline. */
  private readonly changeArchived = new Map<number, boolean>();
  /** Archived flag set in place on a form's latest version (`reindex: false`). */
  private readonly archivedInPlace = new Map<number, boolean>();
  /** Forms whose superseded versions are hidden: a changed form is served once, as HQ does. */
  private readonly changedForms = new Set<number>();
  private readonly deletedForms = new Set<number>();
  private readonly deletedCases = new Set<number>();
  private readonly deletedWorkers = new Set<number>();
  private readonly messagingEventCount: number;
  private readonly ucrRowCount: number;
  private messagingEventsCache: MessagingEvents | undefined;
  private ucrCache: UcrDataSource | undefined;

  constructor(seed: number, project: SandboxProject, live: boolean) {
    this.name = project.name;
    this.salt = hash(seed, hashString(project.name));
    const share = project.reindexedShare ?? 0.05;
    const tieRun = project.tieRun ?? 3;
    this.forms = new Timeline({
      count: project.forms,
      reindexedShare: share,
      tieRun,
      live,
      salt: hash(this.salt, 1),
    });
    this.cases = new Timeline({
      count: project.cases,
      reindexedShare: share,
      tieRun,
      live,
      salt: hash(this.salt, 2),
    });
    this.mobileUsers = Math.max(1, project.mobileUsers ?? 25);
    this.webUsers = Math.max(0, project.webUsers ?? 3);
    this.groups = Math.max(0, project.groups ?? 4);
    this.locations = Math.max(1, project.locations ?? 12);
    this.appId = hex32(this.salt, 90);
    this.buildId = hex32(this.salt, 91);
    this.messagingEventCount = Math.max(0, project.messagingEvents ?? 120);
    this.ucrRowCount = Math.max(0, project.ucrRows ?? 150);
  }

  /** The project's messaging events (built on first use). */
  get messagingEvents(): MessagingEvents {
    this.messagingEventsCache ??= new MessagingEvents(
      hash(this.salt, 3),
      this.name,
      this.messagingEventCount,
      (k) => (this.cases.count > 0 ? this.caseId(k % this.cases.count) : null),
    );
    return this.messagingEventsCache;
  }

  /** The project's one UCR data source (built on first use). */
  get ucr(): UcrDataSource {
    this.ucrCache ??= new UcrDataSource(hash(this.salt, 4), this.name, this.ucrRowCount);
    return this.ucrCache;
  }

  // ---- ids and cheap facets --------------------------------------------------------------------

  formId(i: number): string {
    return uuid(this.salt, 10, i);
  }
  formTypeIndex(i: number): number {
    const v = hash(this.salt, 11, i) % 10;
    return v < 4 ? 0 : v < 8 ? 1 : 2;
  }
  formArchived(i: number, j: number, kind: EventKind): boolean {
    if (kind === 'change') return this.changeArchived.get(j) ?? false;
    const inPlace = this.archivedInPlace.get(i);
    if (inPlace !== undefined) return inPlace;
    // A re-index that modified nothing keeps the archived flag of the version before it.
    const at = this.forms.contentAt(i, j);
    const atKind = at === j ? kind : this.forms.event(at).kind;
    // An edit of an old form sometimes archives it: a pull already past it never learns (HQ quirk).
    return atKind === 'original' ? hash(this.salt, 12, i) % 40 === 0 : hash(this.salt, 13, at) % 6 === 0;
  }
  formUser(i: number): number {
    return hash(this.salt, 14, i) % this.mobileUsers;
  }
  formCase(i: number): number {
    return this.cases.count > 0 ? hash(this.salt, 15, i) % this.cases.count : -1;
  }

  caseId(k: number): string {
    return uuid(this.salt, 20, k);
  }
  caseType(k: number): 'household' | 'person' {
    return k % 4 === 0 ? 'household' : 'person';
  }
  caseOwner(k: number): number {
    return hash(this.salt, 21, k) % this.mobileUsers;
  }
  /** Whether case event j shows the case closed (a re-index that modified nothing keeps the state before it). */
  caseClosed(j: number, kind: EventKind): boolean {
    const at = this.cases.contentAt(this.cases.event(j).record, j);
    const atKind = at === j ? kind : this.cases.event(at).kind;
    return atKind !== 'original' && hash(this.salt, 23, at) % 3 === 0;
  }

  userId(u: number): string {
    return hex32(this.salt, 30, u);
  }
  webUserId(u: number): string {
    return hex32(this.salt, 31, u);
  }
  groupId(g: number): string {
    return hex32(this.salt, 32, g);
  }
  locationId(l: number): string {
    return hex32(this.salt, 33, l);
  }
  locationTypeId(level: number): number {
    return 100 + level;
  }
  formUniqueId(t: number): string {
    return hex32(this.salt, 92, t);
  }
  moduleUniqueId(m: number): string {
    return hex32(this.salt, 93, m);
  }

  private personName(seed: number): { first: string; last: string } {
    return {
      first: FIRST_NAMES[hash(seed, 1) % FIRST_NAMES.length]!,
      last: LAST_NAMES[hash(seed, 2) % LAST_NAMES.length]!,
    };
  }

  mobileUsername(u: number): string {
    const { first } = this.personName(hash(this.salt, 34, u));
    const ascii =
      first
        .normalize('NFD')
        .replace(/[^a-zA-Z]/g, '')
        .toLowerCase() || 'worker';
    return `${ascii}${u + 1}@${this.name}.commcarehq.org`;
  }

  // ---- changes applied at run time ---------------------------------------------------------------

  /** Whether any change was applied (serving then filters every event through the visibility checks). */
  get changed(): boolean {
    return this.generation > 0;
  }

  private indexOf(what: string, id: string, count: number, idOf: (n: number) => string): number {
    for (let n = 0; n < count; n++) if (idOf(n) === id) return n;
    throw new SandboxChangeError(`Sandbox project '${this.name}' has no ${what} '${id}'`);
  }

  formIndex(id: string): number {
    return this.indexOf('form', id, this.forms.count, (i) => this.formId(i));
  }

  caseIndex(id: string): number {
    return this.indexOf('case', id, this.cases.count, (k) => this.caseId(k));
  }

  userIndex(id: string): number {
    return this.indexOf('mobile worker', id, this.mobileUsers, (u) => this.userId(u));
  }

  /**
   * How long before its first indexing a record was received: nothing for most, hours to days for one
   * in 30 (indexing backlogs, re-processed submissions). Such a record reaches the index after records
   * received later, which is what a pager on received_on or server_modified_on misses and one on
   * indexed_on does not (HQ's reason for `indexed_on`).
   */
  private indexingDelay(salt: number, n: number): number {
    return hash(this.salt, salt, n) % 30 === 0
      ? 3_600_000_000 * (1 + (hash(this.salt, salt + 1, n) % 240))
      : 0;
  }

  /** received_on of form i: its first receipt, the same in every version. */
  formReceived(i: number): number {
    return this.forms.received(this.forms.versions(i)[0]!) - this.indexingDelay(16, i);
  }

  /** server_modified_on of form i as of event j: its last modification (archiving included). */
  formServerModified(i: number, j: number): number {
    const at = this.forms.modifiedAt(i, j);
    return at === this.forms.versions(i)[0] ? this.formReceived(i) : this.forms.received(at);
  }

  /** server_date_modified of case k as of event j: its last modification, not its last re-index. */
  caseServerModified(k: number, j: number): number {
    const at = this.cases.contentAt(k, j);
    return this.cases.received(at) - (at === this.cases.versions(k)[0] ? this.indexingDelay(18, k) : 0);
  }

  /** date_modified of case k as of event j: the phone's clock, a little before the server's. */
  casePhoneModified(k: number, j: number): number {
    const at = this.cases.contentAt(k, j);
    return this.caseServerModified(k, j) - 1_000_000 - (hash(this.salt, 62, at) % 3_000_000);
  }

  /** Whether form i's latest version is archived. */
  formIsArchived(i: number): boolean {
    const j = this.forms.latest(i, this.forms.totalLength);
    return this.formArchived(i, j, this.forms.event(j).kind);
  }

  apply(change: SandboxChange): void {
    switch (change.kind) {
      case 'archive-form':
      case 'unarchive-form': {
        const i = this.formIndex(change.id);
        if (!this.formVisible(this.forms.latest(i, this.forms.totalLength)))
          throw new SandboxChangeError(`Form '${change.id}' is deleted`);
        const archived = change.kind === 'archive-form';
        if (change.reindex === false) {
          const latest = this.forms.latest(i, this.forms.totalLength);
          if (this.forms.event(latest).kind === 'change') this.changeArchived.set(latest, archived);
          else this.archivedInPlace.set(i, archived);
        } else {
          this.changeArchived.set(this.forms.addChange(i), archived);
          this.archivedInPlace.delete(i);
        }
        this.changedForms.add(i);
        break;
      }
      case 'delete-form': {
        const i = this.formIndex(change.id);
        if (!this.formIsArchived(i))
          throw new SandboxChangeError(`Form '${change.id}' is not archived; HQ deletes archived forms only`);
        this.deletedForms.add(i);
        break;
      }
      case 'delete-case':
        this.deletedCases.add(this.caseIndex(change.id));
        break;
      case 'delete-worker':
        this.deletedWorkers.add(this.userIndex(change.userId));
        break;
    }
    this.generation += 1;
  }

  /** Whether form event j is served: its form and worker exist and it is the latest version of a changed form. */
  formVisible(j: number): boolean {
    const i = this.forms.event(j).record;
    if (this.deletedForms.has(i) || this.deletedWorkers.has(this.formUser(i))) return false;
    return !this.changedForms.has(i) || j === this.forms.latest(i, this.forms.totalLength);
  }

  /** Whether case event j is served: neither the case nor its owner was deleted. */
  caseVisible(j: number): boolean {
    const k = this.cases.event(j).record;
    return !this.deletedCases.has(k) && !this.deletedWorkers.has(this.caseOwner(k));
  }

  /** Whether mobile worker u still exists. */
  userVisible(u: number): boolean {
    return !this.deletedWorkers.has(u);
  }

  // ---- forms -----------------------------------------------------------------------------------

  /** Form record i as of event j. */
  form(i: number, j: number, kind: EventKind, options: { casesFull?: boolean } = {}): JsonObject {
    const rng = new Rng(hash(this.salt, 40, i));
    const type = FORM_TYPES[this.formTypeIndex(i)]!;
    const id = this.formId(i);
    const t = this.forms;
    // A change event (archive, unarchive), or a re-index that modified nothing, keeps the content of the
    // version before it. received_on is the first receipt; server_modified_on the last modification.
    const contentAt = t.contentAt(i, j);
    const contentKind = t.event(contentAt).kind;
    const indexedOn = t.time(j);
    const firstReceived = this.formReceived(i);
    const received = firstReceived;
    const serverModified = this.formServerModified(i, j);
    const editedOn = t.received(contentAt);
    const user = this.formUser(i);
    const userId = this.userId(user);
    const username = this.mobileUsername(user).split('@')[0]!;
    const timeEnd = firstReceived - 60_000_000 - (hash(this.salt, 42, i) % 3_600_000_000);
    const timeStart = timeEnd - 60_000_000 - (hash(this.salt, 43, i) % 900_000_000);
    const edited = contentKind !== 'original';
    const appVersion = edited ? 19 : 18;

    const meta: JsonObject = {
      '@xmlns': 'http://openrosa.org/jr/xforms',
      deviceID: `sandbox-${hash(this.salt, 44, user) % 100000}`,
      instanceID: id,
      timeStart: formatMicros(timeStart, 'Z'),
      timeEnd: formatMicros(timeEnd, 'Z'),
      userID: userId,
      username,
      appVersion: `CommCare Android, version "2.53.1"(464694). App v${appVersion}. CommCare Version 2.53.1.`,
    };
    const form: JsonObject = {
      '#type': 'data',
      '@name': type.name,
      '@uiVersion': '1',
      '@version': String(appVersion),
      '@xmlns': type.xmlns,
    };
    const caseIndex = this.formCase(i);
    if (type.key === 'registration') {
      const name = this.personName(hash(this.salt, 45, i));
      form.household_name = `${name.first} ${name.last}`;
      form.household_size = String(rng.range(1, 9) + (edited ? 1 : 0));
      form.services = rng.subset(SERVICES).join(' ');
      if (!rng.chance(0.15)) form.phone = rng.chance(0.2) ? '' : `+2547${rng.range(10000000, 99999999)}`;
      form.location_info = {
        village: rng.pick(VILLAGES),
        gps: rng.chance(0.3)
          ? ''
          : `${(rng.float() * 10 - 5).toFixed(6)} ${(rng.float() * 10 + 30).toFixed(6)} 1200.0 5.0`,
      };
      const members = rng.int(4);
      const entries: JsonObject[] = [];
      for (let m = 0; m < members; m++) {
        const member = this.personName(hash(this.salt, 46, i, m));
        entries.push({
          member_name: `${member.first} ${member.last}`,
          age: String(rng.range(0, 80)),
          sex: rng.pick(['male', 'female']),
        });
      }
      // HQ's single-repeat quirk: one entry is a plain object, several are an array, none is absent.
      if (members === 1) form.members = entries[0]!;
      else if (members > 1) form.members = entries;
    } else if (type.key === 'followup') {
      form.visit_date = formatMicros(timeEnd, 'Z').slice(0, 10);
      form.weight = (rng.float() * 60 + 20 + (edited ? 0.5 : 0)).toFixed(1);
      form.symptoms = rng.chance(0.2) ? '' : rng.subset(SYMPTOMS).join(' ');
      form.notes = edited ? 'edited: corrected weight' : rng.pick(NOTES);
      form.vitals = {
        temperature: (36 + rng.float() * 3).toFixed(1),
        bp: rng.chance(0.25)
          ? { systolic: '', diastolic: '' }
          : { systolic: String(rng.range(95, 150)), diastolic: String(rng.range(60, 95)) },
      };
    } else {
      form.meal_count = String(rng.range(0, 4));
      form.food_groups = rng.subset(['grains', 'legumes', 'dairy', 'meat', 'vegetables', 'fruit']).join(' ');
      if (rng.chance(0.5)) form.comment = rng.pick(['ठीक है', 'Très bien', '', 'needs follow-up']);
      const children = rng.int(3);
      const kids: JsonObject[] = [];
      for (let c = 0; c < children; c++)
        kids.push({
          child_name: `${this.personName(hash(this.salt, 47, i, c)).first}`,
          muac: (11 + rng.float() * 5).toFixed(1),
        });
      if (children === 1) form.children = kids[0]!;
      else if (children > 1) form.children = kids;
    }
    if (type.key !== 'survey' && caseIndex >= 0) {
      const update: JsonObject =
        type.key === 'registration'
          ? {
              household_size: form.household_size as string,
              village: (form.location_info as JsonObject).village!,
            }
          : { weight: form.weight as string, last_visit: form.visit_date as string };
      form.case = {
        '@case_id': this.caseId(caseIndex),
        '@date_modified': formatMicros(timeEnd, 'Z'),
        '@user_id': userId,
        '@xmlns': 'http://commcarehq.org/case/transaction/v2',
        update,
      };
    }
    form.meta = meta;

    const attachments: JsonObject = {
      'form.xml': {
        content_type: 'text/xml',
        length: 900 + (hash(this.salt, 48, i) % 2000),
        url: `/a/${this.name}/api/form/attachment/${id}/form.xml`,
      },
    };
    if (type.key === 'survey' && rng.chance(0.3))
      attachments['photo.jpg'] = {
        content_type: 'image/jpeg',
        length: 40_000 + (hash(this.salt, 49, i) % 200_000),
        url: `/a/${this.name}/api/form/attachment/${id}/photo.jpg`,
      };

    const record: JsonObject = {
      id,
      domain: this.name,
      app_id: this.appId,
      build_id: this.buildId,
      type: 'data',
      version: String(appVersion),
      uiversion: '1',
      archived: this.formArchived(i, j, kind),
      problem: null,
      initial_processing_complete: true,
      is_phone_submission: true,
      submit_ip: `10.0.${user % 256}.${(hash(this.salt, 50, i) % 250) + 1}`,
      received_on: formatMicros(received, 'Z'),
      server_modified_on: formatMicros(serverModified, 'Z'),
      indexed_on: formatMicros(indexedOn, 'Z'),
      // Couch's edited_on is a naive datetime (form.yaml in HQ's OpenAPI description).
      edited_on: edited ? formatMicros(editedOn, 'naive') : null,
      edited_by_user_id: edited ? userId : null,
      form,
      metadata: {
        appVersion: meta.appVersion!,
        app_build_version: appVersion,
        commcare_version: '2.53.1',
        deviceID: meta.deviceID!,
        instanceID: id,
        location: null,
        // HQ's cleaned metadata carries naive times (§2.4).
        timeStart: formatMicros(timeStart, 'naive'),
        timeEnd: formatMicros(timeEnd, 'naive'),
        userID: userId,
        username,
      },
      attachments,
      resource_uri: '',
    };
    if (options.casesFull) {
      const cases: JsonValue[] = [];
      if (form.case && caseIndex >= 0) {
        const versions = this.cases.versions(caseIndex);
        cases.push(this.caseV1(caseIndex, versions[0]!, 'original'));
      }
      record.cases = cases;
    }
    return record;
  }

  // ---- cases -----------------------------------------------------------------------------------

  private caseCore(k: number, j: number, kind: EventKind) {
    const rng = new Rng(hash(this.salt, 60, k));
    const t = this.cases;
    const first = t.versions(k)[0]!;
    const opened = this.caseServerModified(k, first) - 5_000_000;
    // A re-index that modified nothing keeps the content and server_date_modified of the version before it.
    const at = t.contentAt(k, j);
    const atKind = at === j ? kind : t.event(at).kind;
    const modified = this.caseServerModified(k, j);
    const type = this.caseType(k);
    const owner = this.userId(this.caseOwner(k));
    const name = this.personName(hash(this.salt, 61, k));
    const closed = this.caseClosed(j, kind);
    const visits = atKind === 'original' ? 0 : atKind === 'reindex' ? 1 : 2;
    const properties: Record<string, string> = {};
    if (type === 'household') {
      properties.household_size = String(rng.range(1, 9));
      properties.village = rng.pick(VILLAGES);
      if (!rng.chance(0.2)) properties.phone = rng.chance(0.3) ? '' : `+2547${rng.range(10000000, 99999999)}`;
    } else {
      properties.age = String(rng.range(0, 80));
      properties.sex = rng.pick(['male', 'female']);
      properties.dob = `19${rng.range(50, 99)}-0${rng.range(1, 9)}-1${rng.range(0, 9)}`;
      properties.weight = (rng.float() * 60 + 20 + visits).toFixed(1);
    }
    properties.visit_count = String(visits);
    if (visits > 0) properties.last_visit = formatMicros(modified, 'Z').slice(0, 10);
    const indices: Record<string, { case_id: string; case_type: string; relationship: string }> = {};
    if (type === 'person') {
      indices.parent = {
        case_id: this.caseId(k - (k % 4)),
        case_type: 'household',
        relationship: rng.chance(0.1) ? 'extension' : 'child',
      };
    }
    return {
      id: this.caseId(k),
      type,
      owner,
      name: type === 'household' ? `${name.last} household` : `${name.first} ${name.last}`,
      externalId: rng.chance(0.3) ? null : `EXT-${String(k).padStart(7, '0')}`,
      opened,
      modified,
      phoneModified: this.casePhoneModified(k, j),
      indexedOn: t.time(j),
      closed,
      properties,
      indices,
      user: this.userId(hash(this.salt, 63, at) % this.mobileUsers),
      openedBy: this.userId(this.caseOwner(k)),
      xformIds: [uuid(this.salt, 64, k), ...(atKind === 'original' ? [] : [uuid(this.salt, 65, at)])],
    };
  }

  caseV1(k: number, j: number, kind: EventKind): JsonObject {
    const c = this.caseCore(k, j, kind);
    return {
      case_id: c.id,
      id: c.id,
      domain: this.name,
      closed: c.closed,
      closed_by: c.closed ? c.user : null,
      date_closed: c.closed ? formatMicros(c.modified, 'naive') : null,
      date_modified: formatMicros(c.phoneModified, 'naive'),
      server_date_modified: formatMicros(c.modified, 'naive'),
      server_date_opened: formatMicros(c.opened, 'naive'),
      indexed_on: formatMicros(c.indexedOn, 'Z'),
      indices: c.indices,
      opened_by: c.openedBy,
      user_id: c.user,
      properties: {
        case_name: c.name,
        case_type: c.type,
        date_opened: formatMicros(c.opened, 'naive'),
        external_id: c.externalId,
        owner_id: c.owner,
        ...c.properties,
      },
      resource_uri: `/a/${this.name}/api/case/v1/${c.id}/`,
      xform_ids: c.xformIds,
    };
  }

  caseV2(k: number, j: number, kind: EventKind): JsonObject {
    const c = this.caseCore(k, j, kind);
    // v2: every date is RFC3339 with Z; properties hold user-defined properties only (§2.6).
    return {
      domain: this.name,
      case_id: c.id,
      case_type: c.type,
      case_name: c.name,
      external_id: c.externalId,
      owner_id: c.owner,
      date_opened: formatMicros(c.opened, 'Z'),
      last_modified: formatMicros(c.phoneModified, 'Z'),
      server_last_modified: formatMicros(c.modified, 'Z'),
      indexed_on: formatMicros(c.indexedOn, 'Z'),
      closed: c.closed,
      date_closed: c.closed ? formatMicros(c.modified, 'Z') : null,
      properties: c.properties,
      indices: c.indices,
    };
  }

  // ---- small resources ---------------------------------------------------------------------------

  private userGroups(u: number): string[] {
    const out: string[] = [];
    for (let g = 0; g < this.groups; g++) if (hash(this.salt, 70, g, u) % 3 === 0) out.push(this.groupId(g));
    return out;
  }

  user(u: number): JsonObject {
    const rng = new Rng(hash(this.salt, 71, u));
    const name = this.personName(hash(this.salt, 34, u));
    const location = hash(this.salt, 72, u) % this.locations;
    const phone = rng.chance(0.7) ? `2547${rng.range(10000000, 99999999)}` : '';
    return {
      id: this.userId(u),
      username: this.mobileUsername(u),
      first_name: name.first,
      last_name: name.last,
      default_phone_number: phone || null,
      email: rng.chance(0.3) ? `worker${u + 1}@example.org` : '',
      phone_numbers: phone ? [phone] : [],
      groups: this.userGroups(u),
      locations: [this.locationId(location)],
      primary_location: this.locationId(location),
      user_data: {
        commcare_project: this.name,
        role: rng.pick(['CHW', 'Supervisor', 'Nurse']),
        languages: rng.pick(['en', 'fr', 'hi', 'sw']),
        ...(rng.chance(0.5) ? { cohort: `${2020 + rng.int(5)}` } : {}),
      },
      eulas: '[]',
      resource_uri: `/a/${this.name}/api/user/v1/${this.userId(u)}/`,
    };
  }

  webUser(u: number, username?: string): JsonObject {
    const name = this.personName(hash(this.salt, 35, u));
    const id = this.webUserId(u);
    return {
      id,
      username: username ?? `manager${u + 1}@example.org`,
      first_name: name.first,
      last_name: name.last,
      email: username ?? `manager${u + 1}@example.org`,
      phone_numbers: [],
      role: u === 0 ? 'Admin' : 'Data Manager',
      is_admin: u === 0,
      permissions: { edit_data: true, access_api: true, view_reports: true, edit_web_users: u === 0 },
      default_phone_number: null,
      eulas: '[]',
      primary_location_id: u === 0 ? '' : this.locationId(0),
      assigned_location_ids: u === 0 ? [] : [this.locationId(0)],
      profile: '',
      user_data: u === 0 ? {} : { team: 'monitoring' },
      tableau_role: null,
      is_active_in_domain: true,
      resource_uri: `/a/${this.name}/api/web-user/v1/${id}/`,
    };
  }

  group(g: number): JsonObject {
    const users: string[] = [];
    for (let u = 0; u < this.mobileUsers; u++)
      if (hash(this.salt, 70, g, u) % 3 === 0) users.push(this.userId(u));
    return {
      id: this.groupId(g),
      domain: this.name,
      name: `${VILLAGES[g % VILLAGES.length]} team ${g + 1}`,
      users,
      case_sharing: g % 2 === 0,
      reporting: true,
      metadata: { region: VILLAGES[g % VILLAGES.length]! },
      resource_uri: `/a/${this.name}/api/group/v1/${this.groupId(g)}/`,
    };
  }

  locationLevel(l: number): number {
    return l === 0 ? 0 : l < 3 ? 1 : l < 7 ? 2 : 3;
  }

  locationParent(l: number): number | null {
    if (l === 0) return null;
    if (l < 7) return Math.floor((l - 1) / 2);
    // Villages hang under the districts 3..6 (or the deepest level that exists).
    const districts = Math.min(7, this.locations) - 3;
    return districts > 0 ? 3 + (l % districts) : 0;
  }

  private locationCore(l: number) {
    const rng = new Rng(hash(this.salt, 80, l));
    const level = this.locationLevel(l);
    const type = LOCATION_TYPES[level]!;
    const name =
      level === 0 ? 'Sandboxia' : level === 3 ? `${VILLAGES[l % VILLAGES.length]} ${l}` : `${type.name} ${l}`;
    return {
      id: this.locationId(l),
      name,
      siteCode: `${type.code}_${l}`,
      type,
      level,
      parent: this.locationParent(l),
      latitude: (rng.float() * 10 - 5).toFixed(10),
      longitude: (rng.float() * 10 + 30).toFixed(10),
      created: formatMicros(Date.UTC(2023, 6, 1 + (l % 28)) * 1000, 'naive'),
      modified: formatMicros(Date.UTC(2024, 0, 1 + (l % 28), 8, l % 60) * 1000 + l, 'naive'),
      data: {
        population: String(rng.range(100, 90000)),
        ...(level === 3 ? { has_clinic: rng.pick(['yes', 'no']) } : {}),
      },
    };
  }

  /**
   * v1 location. `id` is SQLLocation's integer primary key (distinct from `location_id`); its
   * `resource_uri` and the `location_type` and `parent` URIs are absolute, built from the request's host
   * (`origin`), so that a parent URI finds its location's `resource_uri` (DET's hierarchy walk does).
   */
  locationV1(l: number, origin = DEFAULT_ORIGIN): JsonObject {
    const c = this.locationCore(l);
    return {
      id: l + 1,
      location_id: c.id,
      domain: this.name,
      name: c.name,
      site_code: c.siteCode,
      external_id: null,
      latitude: c.latitude,
      longitude: c.longitude,
      location_data: c.data,
      location_type: `${origin}/a/${this.name}/api/location_type/v1/${this.locationTypeId(c.level)}/`,
      parent:
        c.parent === null ? null : `${origin}/a/${this.name}/api/location/v1/${this.locationId(c.parent)}/`,
      created_at: c.created,
      last_modified: c.modified,
      resource_uri: `${origin}/a/${this.name}/api/location/v1/${c.id}/`,
    };
  }

  locationV2(l: number): JsonObject {
    const c = this.locationCore(l);
    return {
      domain: this.name,
      last_modified: c.modified,
      latitude: c.latitude,
      longitude: c.longitude,
      location_data: c.data,
      location_id: c.id,
      location_type_code: c.type.code,
      location_type_name: c.type.name,
      name: c.name,
      // v0_6.LocationResource.dehydrate sets '' (not null) when there is no parent.
      parent_location_id: c.parent === null ? '' : this.locationId(c.parent),
      site_code: c.siteCode,
    };
  }

  /** Location types in use (levels that have at least one location). */
  get locationTypeCount(): number {
    return this.locationLevel(this.locations - 1) + 1;
  }

  locationType(level: number, origin = DEFAULT_ORIGIN): JsonObject {
    const type = LOCATION_TYPES[level]!;
    const id = this.locationTypeId(level);
    return {
      id,
      domain: this.name,
      name: type.name,
      code: type.code,
      administrative: level < 3,
      shares_cases: level === 3,
      view_descendants: level < 2,
      parent:
        level === 0
          ? null
          : `${origin}/a/${this.name}/api/location_type/v1/${this.locationTypeId(level - 1)}/`,
      resource_uri: `${origin}/a/${this.name}/api/location_type/v1/${id}/`,
    };
  }

  application(): JsonObject {
    const question = (q: FormType['questions'][number]) => {
      const tag =
        q.type === 'Select' || q.type === 'MSelect' ? (q.type === 'MSelect' ? 'select' : 'select1') : 'input';
      const segments = q.path.split('/');
      return {
        label: q.label,
        tag,
        value: q.path,
        type: q.type,
        required: false,
        relevant: null,
        repeat:
          segments.length > 3 && (segments[2] === 'members' || segments[2] === 'children')
            ? `/data/${segments[2]}`
            : null,
        group: segments.length > 3 ? segments.slice(0, -1).join('/') : null,
        options: [],
      };
    };
    const formEntry = (t: number) => ({
      xmlns: FORM_TYPES[t]!.xmlns,
      name: { en: FORM_TYPES[t]!.name },
      unique_id: this.formUniqueId(t),
      questions: FORM_TYPES[t]!.questions.map(question),
    });
    return {
      id: this.appId,
      name: 'Sandbox Health',
      version: 19,
      is_released: true,
      // Application.built_on is naive; versions[].built_on comes from a Couch view row and carries Z.
      built_on: '2024-01-01T00:00:00.000000',
      build_comment: 'sandbox build',
      built_from_app_id: null,
      modules: [
        {
          name: 'Households',
          case_type: 'household',
          case_properties: [...CASE_PROPERTIES.household],
          unique_id: this.moduleUniqueId(0),
          forms: [formEntry(0)],
        },
        {
          name: 'People',
          case_type: 'person',
          case_properties: [...CASE_PROPERTIES.person],
          unique_id: this.moduleUniqueId(1),
          forms: [formEntry(1)],
        },
        {
          name: 'Surveys',
          case_type: '',
          case_properties: [],
          unique_id: this.moduleUniqueId(2),
          forms: [formEntry(2)],
        },
      ],
      versions: [
        {
          id: this.buildId,
          built_on: '2024-01-01T00:00:00.000000Z',
          version: 19,
          build_comment: 'sandbox build',
          is_released: true,
        },
      ],
      resource_uri: `/a/${this.name}/api/application/v1/${this.appId}/`,
    };
  }
}
