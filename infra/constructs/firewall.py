"""AWS WAF in front of one API Gateway stage: AWS managed rule groups first, then a per-IP rate limit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

WINDOW_SECONDS = 300  # AWS WAF rate-based rules count over 5 minutes


@dataclass(frozen=True)
class ManagedRuleGroup:
    name: str  # an AWS managed rule group, e.g. AWSManagedRulesCommonRuleSet
    count_only: tuple[str, ...] = ()  # its rules that only count matches (legitimate traffic trips them)


def _visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=name, sampled_requests_enabled=True
    )


def _managed(group: ManagedRuleGroup, priority: int) -> wafv2.CfnWebACL.RuleProperty:
    count = wafv2.CfnWebACL.RuleActionProperty(count={})
    overrides = [
        wafv2.CfnWebACL.RuleActionOverrideProperty(name=rule, action_to_use=count) for rule in group.count_only
    ]
    return wafv2.CfnWebACL.RuleProperty(
        name=group.name,
        priority=priority,
        override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
        statement=wafv2.CfnWebACL.StatementProperty(
            managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                vendor_name="AWS", name=group.name, rule_action_overrides=overrides or None
            )
        ),
        visibility_config=_visibility(group.name),
    )


def protect_stage(
    scope: Construct,
    stage: apigateway.Stage,
    *,
    metric_name: str,
    rule_groups: Sequence[ManagedRuleGroup],
    requests_per_ip: int,
) -> wafv2.CfnWebACL:
    """A regional web ACL for `stage`: `rule_groups` in order, then block an IP over `requests_per_ip` requests
    per 5 minutes. Creates `Firewall` and `FirewallAssociation` in `scope` itself, so their logical ids stay put:
    a replaced association would detach the ACL from the stage when CloudFormation deletes the old one."""
    acl = wafv2.CfnWebACL(
        scope,
        "Firewall",
        scope="REGIONAL",
        default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
        visibility_config=_visibility(metric_name),
        rules=[
            *(_managed(group, priority) for priority, group in enumerate(rule_groups)),
            wafv2.CfnWebACL.RuleProperty(
                name="per-ip-rate",
                priority=len(rule_groups),
                action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                        limit=requests_per_ip, aggregate_key_type="IP"
                    )
                ),
                visibility_config=_visibility("per-ip-rate"),
            ),
        ],
    )
    wafv2.CfnWebACLAssociation(scope, "FirewallAssociation", resource_arn=stage.stage_arn, web_acl_arn=acl.attr_arn)
    return acl
