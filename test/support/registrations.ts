/** The demo query's household registration forms in a sandbox project: what its `households` table holds. */
import type { JsonObject } from '../../functions/common/json';
import type { SandboxDataset } from '../../functions/sandbox';

/** Whether a form is a household registration (a row in `households`). */
export const isRegistration = (form: JsonObject): boolean =>
  String((form.form as JsonObject)['@xmlns']).endsWith('REGISTRATION');

/** The ids of the registration forms HQ lists today (latest version not archived), sorted. */
export function liveRegistrationIds(dataset: SandboxDataset, project: string): string[] {
  const out: string[] = [];
  for (const [id, form] of dataset.finalState(project, 'form'))
    if (isRegistration(form) && form.archived !== true) out.push(id);
  return out.sort();
}

/** The live registration forms with members (child rows in `household_members`), in the dataset's order. */
export function registrationsWithMembers(dataset: SandboxDataset, project: string): JsonObject[] {
  const out: JsonObject[] = [];
  for (const [, form] of dataset.finalState(project, 'form'))
    if (isRegistration(form) && form.archived !== true && Array.isArray((form.form as JsonObject).members))
      out.push(form);
  return out;
}
