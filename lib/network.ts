/**
 * The network the exports run in: private subnets whose traffic leaves through NAT gateways with fixed
 * Elastic IPs, because CommCare HQ API keys accept an allow-list of single IPv4 addresses only.
 */
import { CfnOutput, Fn, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

export interface ExportNetworkProps {
  /**
   * Elastic IPs to create, one NAT gateway each (1 or 2). Ignored when `eipAllocationIds` is given.
   * The addresses are retained when the stack is deleted, so a redeploy can import them and HQ
   * allow-lists stay valid.
   * @default 1 - one NAT gateway, one address to allow-list
   */
  readonly elasticIpCount?: number;

  /**
   * Allocation ids (`eipalloc-...`) of existing Elastic IPs, one NAT gateway each (1 or 2). Use this to
   * keep the addresses HQ keys already allow.
   * @default - new addresses are created (`elasticIpCount`)
   */
  readonly eipAllocationIds?: readonly string[];

  /**
   * Availability zones the VPC spans (2 at most for an environment-agnostic stack).
   * @default 2
   */
  readonly maxAzs?: number;
}

/** VPC, NAT gateways on known Elastic IPs, S3 gateway and Secrets Manager interface endpoints, flow logs. */
export class ExportNetwork extends Construct {
  /** The VPC. */
  public readonly vpc: ec2.Vpc;
  /** Subnets for functions that call HQ: egress through the NAT gateways. */
  public readonly appSubnets: ec2.SubnetSelection = { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };
  /** Subnets for databases: no route to the internet. */
  public readonly dataSubnets: ec2.SubnetSelection = { subnetType: ec2.SubnetType.PRIVATE_ISOLATED };
  /** The public IPv4 addresses all egress uses (tokens); put them in every HQ key's allow-list. */
  public readonly egressIps: string[];
  /** The allocation ids behind `egressIps` (tokens for created addresses). */
  public readonly eipAllocationIds: string[];

  constructor(scope: Construct, id: string, props: ExportNetworkProps = {}) {
    super(scope, id);
    const imported = props.eipAllocationIds ?? [];
    const count = imported.length > 0 ? imported.length : (props.elasticIpCount ?? 1);
    if (count < 1 || count > 2) {
      throw new Error(
        `ExportNetwork: ${count} Elastic IPs requested; expected 1 or 2 (one NAT gateway per address)`,
      );
    }

    if (imported.length > 0) {
      this.eipAllocationIds = [...imported];
      // CloudFormation cannot look up the address of an imported allocation id; its owner knows it
      // (it is already on the allow-lists), and `aws ec2 describe-addresses` shows it.
      this.egressIps = [];
    } else {
      const eips = Array.from({ length: count }, (_, i) => {
        const eip = new ec2.CfnEIP(this, `NatEip${i + 1}`, {
          domain: 'vpc',
          tags: [{ key: 'Name', value: `commcare-export-egress-${i + 1}` }],
        });
        // Keep the address when the stack goes: HQ keys allow-list it.
        eip.applyRemovalPolicy(RemovalPolicy.RETAIN);
        return eip;
      });
      this.eipAllocationIds = eips.map((e) => e.attrAllocationId);
      this.egressIps = eips.map((e) => e.attrPublicIp);
    }

    this.vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: props.maxAzs ?? 2,
      natGateways: count,
      natGatewayProvider: ec2.NatProvider.gateway({ eipAllocationIds: this.eipAllocationIds }),
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'app', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 22 },
        { name: 'data', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 },
      ],
      gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3 } },
      flowLogs: {
        rejected: {
          trafficType: ec2.FlowLogTrafficType.REJECT,
          destination: ec2.FlowLogDestination.toCloudWatchLogs(
            new logs.LogGroup(this, 'FlowLogs', {
              retention: logs.RetentionDays.THREE_MONTHS,
              removalPolicy: RemovalPolicy.DESTROY,
            }),
          ),
        },
      },
    });

    // Secrets are read on every cold start and by rotation; the endpoint keeps that traffic off the NAT.
    const secretsEndpoint = this.vpc.addInterfaceEndpoint('SecretsManager', {
      service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
      subnets: this.appSubnets,
      privateDnsEnabled: true,
    });
    Validations.of(secretsEndpoint).acknowledge({
      id: 'AwsSolutions-EC23',
      reason:
        "The endpoint's only ingress rule is HTTPS from the VPC's own CIDR (an intrinsic cdk-nag cannot resolve), not from 0.0.0.0/0.",
    });

    // Stack-level outputs keep short, stable keys (EgressIps) that docs and scripts can name.
    if (this.egressIps.length > 0) {
      new CfnOutput(Stack.of(this), 'EgressIps', {
        description:
          "Public IPv4 addresses the exports call CommCare HQ from: add each to every HQ API key's IP allow-list",
        value: Fn.join(',', this.egressIps),
      });
    }
    new CfnOutput(Stack.of(this), 'EgressAllocationIds', {
      description:
        'Elastic IP allocation ids of the NAT gateways (import them into a new stack to keep the addresses)',
      value: Fn.join(',', this.eipAllocationIds),
    });
  }
}
