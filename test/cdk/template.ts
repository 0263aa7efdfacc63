/** Helpers to read a synthesized template: policies of a role, and a state machine's definition. */
import type { Template } from 'aws-cdk-lib/assertions';

export interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Condition?: Record<string, unknown>;
}

/** Every statement of every policy attached to the role whose logical id starts with `rolePrefix`. */
export function roleStatements(template: Template, rolePrefix: string): Statement[] {
  const policies = template.findResources('AWS::IAM::Policy');
  return Object.values(policies)
    .filter((p) =>
      (p.Properties.Roles as { Ref: string }[]).some(
        (r) => typeof r.Ref === 'string' && r.Ref.startsWith(rolePrefix),
      ),
    )
    .flatMap((p) => p.Properties.PolicyDocument.Statement as Statement[]);
}

export function actionsOf(statement: Statement): string[] {
  return Array.isArray(statement.Action) ? statement.Action : [statement.Action];
}

/** The ASL of a state machine, with every intrinsic in the definition replaced by "<ref>". */
export function stateMachineDefinition(template: Template, logicalIdPrefix: string): Record<string, unknown> {
  const machines = template.findResources('AWS::StepFunctions::StateMachine');
  const id = Object.keys(machines).find((k) => k.startsWith(logicalIdPrefix));
  if (!id) throw new Error(`no state machine ${logicalIdPrefix}*`);
  const body = machines[id]?.Properties.DefinitionString as string | { 'Fn::Join': [string, unknown[]] };
  const text =
    typeof body === 'string'
      ? body
      : body['Fn::Join'][1].map((p) => (typeof p === 'string' ? p : '<ref>')).join('');
  return JSON.parse(text) as Record<string, unknown>;
}
