//! Interruption events from customers' accounts: Spotwise's event bus, which admits only the
//! accounts linked to it, and the forwarding each linked account must have in place
//! (`infra/customer-events.yaml`) for its instances' warnings to reach it.

use aws_config::SdkConfig;
use aws_sdk_eventbridge::Client;

use crate::error::AwsFailure;

/// The forwarding rule `infra/customer-events.yaml` creates, in every region of an account.
pub const FORWARDING_RULE: &str = "spotwise-interruption-forwarding";
/// The tag that lets the agent complete a group's lifecycle hooks (`infra/agent-role.yaml`).
const MANAGED_TAG: &str = "spotwise.io/managed";
/// Groups read per region by the forwarding check; an account with more is checked in part.
const GROUPS_CHECKED: usize = 500;

/// Spotwise's interruption event bus.
pub struct InterruptionBus {
    client: Client,
    name: String,
    arn: String,
}

impl InterruptionBus {
    pub fn new(sdk: &SdkConfig, name: impl Into<String>, arn: impl Into<String>) -> Self {
        Self {
            client: Client::new(sdk),
            name: name.into(),
            arn: arn.into(),
        }
    }

    pub fn arn(&self) -> &str {
        &self.arn
    }

    fn statement_id(account_id: &str) -> String {
        format!("account-{account_id}")
    }

    /// Lets `account_id` put events on the bus (one statement per account; repeating it changes
    /// nothing).
    pub async fn admit(&self, account_id: &str) -> Result<(), AwsFailure> {
        self.client
            .put_permission()
            .event_bus_name(&self.name)
            .action("events:PutEvents")
            .principal(account_id)
            .statement_id(Self::statement_id(account_id))
            .send()
            .await
            .map_err(|e| AwsFailure::from_sdk("events:PutPermission", e))?;
        Ok(())
    }

    /// Takes the account's statement off the bus; an account not admitted is fine.
    pub async fn revoke(&self, account_id: &str) -> Result<(), AwsFailure> {
        match self
            .client
            .remove_permission()
            .event_bus_name(&self.name)
            .statement_id(Self::statement_id(account_id))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match AwsFailure::from_sdk("events:RemovePermission", e) {
                f if f.has_code("ResourceNotFoundException") => Ok(()),
                f => Err(f),
            },
        }
    }
}

/// What a linked account lacks for its interruption signals to reach Spotwise, one sentence
/// per gap, read through the account's Spotwise role in each of `regions`: the forwarding rule
/// (present, enabled, targeting `bus_arn`), and for Auto Scaling groups with termination hooks,
/// the tag that lets the agent complete them. Calls the role may not make are gaps too.
pub async fn forwarding_gaps(
    customer: &SdkConfig,
    regions: &[String],
    bus_arn: &str,
) -> Vec<String> {
    let mut gaps = Vec::new();
    for region in regions {
        let in_region = customer
            .to_builder()
            .region(aws_config::Region::new(region.clone()))
            .build();
        gaps.extend(rule_gaps(&Client::new(&in_region), region, bus_arn).await);
        gaps.extend(hook_gaps(&aws_sdk_autoscaling::Client::new(&in_region), region).await);
    }
    gaps
}

async fn rule_gaps(events: &Client, region: &str, bus_arn: &str) -> Vec<String> {
    let rule = match events.describe_rule().name(FORWARDING_RULE).send().await {
        Ok(rule) => rule,
        Err(e) => {
            let failure = AwsFailure::from_sdk("events:DescribeRule", e);
            return vec![if failure.has_code("ResourceNotFoundException") {
                format!(
                    "{region}: no rule {FORWARDING_RULE}; deploy infra/customer-events.yaml there, \
                     or interruption warnings for its instances never arrive"
                )
            } else {
                format!(
                    "{region}: the forwarding rule could not be read ({failure}); update the Spotwise role (infra/customer-role.yaml)"
                )
            }];
        }
    };
    let mut gaps = Vec::new();
    if rule.state().map(|s| s.as_str()) != Some("ENABLED") {
        gaps.push(format!("{region}: rule {FORWARDING_RULE} is disabled"));
    }
    match events
        .list_targets_by_rule()
        .rule(FORWARDING_RULE)
        .send()
        .await
    {
        Ok(listed) if listed.targets().iter().any(|t| t.arn() == bus_arn) => {}
        Ok(_) => gaps.push(format!(
            "{region}: rule {FORWARDING_RULE} does not target Spotwise's bus {bus_arn}"
        )),
        Err(e) => gaps.push(format!(
            "{region}: the forwarding rule's targets could not be read ({})",
            AwsFailure::from_sdk("events:ListTargetsByRule", e)
        )),
    }
    gaps
}

/// Termination hooks the agent could not complete: their group lacks the tag its role needs.
async fn hook_gaps(autoscaling: &aws_sdk_autoscaling::Client, region: &str) -> Vec<String> {
    let mut groups = Vec::new();
    let mut pages = autoscaling
        .describe_auto_scaling_groups()
        .into_paginator()
        .items()
        .send();
    while let Some(group) = pages.next().await {
        match group {
            Ok(group) if groups.len() < GROUPS_CHECKED => groups.push(group),
            Ok(_) => break,
            Err(e) => {
                return vec![format!(
                    "{region}: Auto Scaling groups could not be read ({})",
                    AwsFailure::from_sdk("autoscaling:DescribeAutoScalingGroups", e)
                )];
            }
        }
    }
    let mut gaps = Vec::new();
    for group in groups {
        let Some(name) = group.auto_scaling_group_name() else {
            continue;
        };
        let tagged = group
            .tags()
            .iter()
            .any(|t| t.key() == Some(MANAGED_TAG) && t.value() == Some("true"));
        if tagged {
            continue;
        }
        let hooks = match autoscaling
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(name)
            .send()
            .await
        {
            Ok(out) => out.lifecycle_hooks,
            Err(e) => {
                gaps.push(format!(
                    "{region}: lifecycle hooks of {name} could not be read ({})",
                    AwsFailure::from_sdk("autoscaling:DescribeLifecycleHooks", e)
                ));
                continue;
            }
        };
        for hook in hooks
            .unwrap_or_default()
            .iter()
            .filter(|h| h.lifecycle_transition() == Some("autoscaling:EC2_INSTANCE_TERMINATING"))
        {
            gaps.push(format!(
                "{region}: group {name} has termination hook {} but no {MANAGED_TAG}=true tag, so \
                 the agent cannot complete it; terminations wait for the hook's timeout",
                hook.lifecycle_hook_name().unwrap_or_default()
            ));
        }
    }
    gaps
}
