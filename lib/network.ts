/**
 * The network the exports run in: private subnets whose traffic leaves from fixed Elastic IPs, because
 * CommCare HQ API keys accept an allow-list of single IPv4 addresses only. Four modes: NAT gateways
 * (default), one NAT instance (cheap, yours to patch), the private subnets of an existing VPC, or no
 * VPC at all (the cheapest: no fixed address, for keys without an allow-list).
 */
import { CfnOutput, Fn, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

/** Where the functions' traffic leaves from (see the `mode` of `ExportNetworkProps`). */
export type NetworkMode = 'nat' | 'nat-instance' | 'existing' | 'none';

/** An existing VPC to run in. */
export interface ExistingVpcOptions {
  /** The VPC id (`vpc-...`). */
  readonly vpcId: string;
  /** Private subnets whose default route leads to a NAT (the functions need HTTPS out). */
  readonly subnetIds: readonly string[];
  /**
   * The public addresses the VPC's NAT uses, shown as the `EgressIps` output.
   * @default - none shown
   */
  readonly egressIps?: readonly string[];
}

export interface ExportNetworkProps {
  /**
   * - `nat`: a new VPC with NAT gateways on fixed Elastic IPs;
   * - `nat-instance`: a new VPC with one EC2 NAT instance on one Elastic IP (about $3-4 a month
   *   instead of about $33 per NAT gateway; a single instance you patch, and a single point of failure);
   * - `existing`: the private subnets of `existingVpc`; no VPC, NAT or endpoint is created;
   * - `none`: nothing: the functions run outside any VPC, on Lambda's own shared addresses (no fixed
   *   egress IP, so no HQ allow-list; no private database either).
   * @default 'nat'
   */
  readonly mode?: NetworkMode;

  /**
   * nat-instance: the NAT instance's type (a Graviton type: the image is arm64 Amazon Linux 2023).
   * @default t4g.nano
   */
  readonly natInstanceType?: ec2.InstanceType;

  /**
   * Required with mode `existing`.
   * @default - a new VPC
   */
  readonly existingVpc?: ExistingVpcOptions;

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

/** VPC, NAT (gateways or an instance) on known Elastic IPs, S3 gateway and Secrets Manager interface endpoints, flow logs. */
export class ExportNetwork extends Construct {
  /** The VPC; undefined in mode `none` (the functions run outside any VPC). */
  public readonly vpc: ec2.IVpc | undefined;
  /** Subnets for functions that call HQ: egress through the NAT; undefined in mode `none`. */
  public readonly appSubnets: ec2.SubnetSelection | undefined;
  /** Subnets for databases: no route to the internet (the app subnets in an existing VPC); undefined in mode `none`. */
  public readonly dataSubnets: ec2.SubnetSelection | undefined;
  /** The public IPv4 addresses all egress uses (tokens); put them in every HQ key's allow-list. */
  public readonly egressIps: string[];
  /** The allocation ids behind `egressIps` (tokens for created addresses); empty for an existing VPC. */
  public readonly eipAllocationIds: string[];
  /** The network mode. */
  public readonly mode: NetworkMode;

  constructor(scope: Construct, id: string, props: ExportNetworkProps = {}) {
    super(scope, id);
    this.mode = props.mode ?? 'nat';
    if (this.mode === 'none') {
      if (props.existingVpc || props.eipAllocationIds || props.elasticIpCount !== undefined) {
        throw new Error('ExportNetwork: mode "none" takes no VPC and no Elastic IPs');
      }
      this.vpc = undefined;
      this.appSubnets = undefined;
      this.dataSubnets = undefined;
      this.egressIps = [];
      this.eipAllocationIds = [];
      return;
    }
    if (this.mode === 'existing') {
      const existing = props.existingVpc;
      if (!existing || existing.subnetIds.length === 0) {
        throw new Error('ExportNetwork: mode "existing" needs existingVpc with at least one subnet id');
      }
      // Attributes, not a lookup: synth stays offline. The subnets' zones are not known offline and
      // nothing here needs them.
      this.vpc = ec2.Vpc.fromVpcAttributes(this, 'Vpc', {
        vpcId: existing.vpcId,
        availabilityZones: ['unknown'],
      });
      const subnets = existing.subnetIds.map((subnetId, i) =>
        ec2.Subnet.fromSubnetAttributes(this, `Subnet${i + 1}`, { subnetId, availabilityZone: 'unknown' }),
      );
      this.appSubnets = { subnets };
      this.dataSubnets = { subnets };
      this.egressIps = [...(existing.egressIps ?? [])];
      this.eipAllocationIds = [];
      if (this.egressIps.length > 0) this.outputEgressIps();
      return;
    }
    this.appSubnets = { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };
    this.dataSubnets = { subnetType: ec2.SubnetType.PRIVATE_ISOLATED };

    const imported = props.eipAllocationIds ?? [];
    const count = imported.length > 0 ? imported.length : (props.elasticIpCount ?? 1);
    const maxCount = this.mode === 'nat-instance' ? 1 : 2;
    if (count < 1 || count > maxCount) {
      throw new Error(
        `ExportNetwork: ${count} Elastic IPs requested; expected ${maxCount === 1 ? '1 (one NAT instance)' : '1 or 2 (one NAT gateway per address)'}`,
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

    const natInstance =
      this.mode === 'nat-instance'
        ? ec2.NatProvider.instanceV2({
            instanceType:
              props.natInstanceType ?? ec2.InstanceType.of(ec2.InstanceClass.T4G, ec2.InstanceSize.NANO),
            machineImage: ec2.MachineImage.latestAmazonLinux2023({ cpuType: ec2.AmazonLinuxCpuType.ARM_64 }),
            defaultAllowedTraffic: ec2.NatTrafficDirection.OUTBOUND_ONLY,
          })
        : undefined;
    const appSubnets = { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };
    const vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: props.maxAzs ?? 2,
      natGateways: count,
      natGatewayProvider: natInstance ?? ec2.NatProvider.gateway({ eipAllocationIds: this.eipAllocationIds }),
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
    this.vpc = vpc;

    if (natInstance) {
      // The instance keeps the Elastic IP (HQ allow-lists name it), not the address it launched with.
      const [instance] = natInstance.gatewayInstances;
      if (!instance) throw new Error('ExportNetwork: the NAT instance was not created');
      new ec2.CfnEIPAssociation(this, 'NatEipAssociation', {
        allocationId: this.eipAllocationIds[0],
        instanceId: instance.instanceId,
      });
      const ack = (rule: string, reason: string) =>
        Validations.of(instance).acknowledge({ id: rule, reason });
      ack(
        'AwsSolutions-EC28',
        'A NAT instance: CloudWatch basic monitoring suffices; detailed monitoring costs more than the instance.',
      );
      ack(
        'AwsSolutions-EC29',
        'A NAT instance holds no data; replacing it is the recovery (network.mode nat-instance, docs/deploy.md).',
      );
      ack(
        'AwsSolutions-EC26',
        'The NAT instance stores nothing on its root volume but the operating system.',
      );
      Validations.of(this).acknowledge({
        id: 'AwsSolutions-EC23',
        reason:
          "The NAT instance's security group admits traffic from the VPC's own CIDR only (an intrinsic cdk-nag cannot resolve).",
      });
    }

    // Secrets are read on every cold start and by rotation; the endpoint keeps that traffic off the NAT.
    const secretsEndpoint = vpc.addInterfaceEndpoint('SecretsManager', {
      service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
      subnets: appSubnets,
      privateDnsEnabled: true,
    });
    Validations.of(secretsEndpoint).acknowledge({
      id: 'AwsSolutions-EC23',
      reason:
        "The endpoint's only ingress rule is HTTPS from the VPC's own CIDR (an intrinsic cdk-nag cannot resolve), not from 0.0.0.0/0.",
    });

    // Stack-level outputs keep short, stable keys (EgressIps) that docs and scripts can name.
    if (this.egressIps.length > 0) this.outputEgressIps();
    new CfnOutput(Stack.of(this), 'EgressAllocationIds', {
      description: `Elastic IP allocation ids of the ${this.mode === 'nat-instance' ? 'NAT instance' : 'NAT gateways'} (import them into a new stack to keep the addresses)`,
      value: Fn.join(',', this.eipAllocationIds),
    });
  }

  private outputEgressIps(): void {
    new CfnOutput(Stack.of(this), 'EgressIps', {
      description:
        "Public IPv4 addresses the exports call CommCare HQ from: add each to every HQ API key's IP allow-list",
      value: Fn.join(',', this.egressIps),
    });
  }
}
