"""What the approval workflow of an environment must never lose, for every model: its link-signing key, its state
and its decision history. Lives in the Storage stack (retained); the approval functions get exactly the access
their role needs through `grant_issue_links` and `grant_decide`.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra.build.nag import suppress
from modelgate.approval import history, state


class ApprovalStore(Construct):
    """The resources are created in the stack itself (`scope`), not under this construct: they are retained, and
    a new logical id would make CloudFormation create new, empty tables and orphan the old ones."""

    def __init__(self, scope: Stack, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self._key = key  # the environment's data key: the tables are encrypted with it
        # HMAC key for approval links, CSRF tokens and sign-in state (kms:GenerateMac / kms:VerifyMac): the
        # secret never leaves KMS. HMAC keys cannot rotate automatically (nag KMS5, suppressed below).
        self.signing_key = kms.Key(
            scope,
            "ApprovalSigningKey",
            description=f"ModelGate approval link signing (HMAC) ({scope.stack_name})",
            key_spec=kms.KeySpec.HMAC_256,
            key_usage=kms.KeyUsage.GENERATE_VERIFY_MAC,
            removal_policy=RemovalPolicy.RETAIN,
            pending_window=Duration.days(30),
        )
        suppress(
            scope,
            "ApprovalSigningKey/Resource",
            {
                "AwsSolutions-KMS5": "An HMAC key: AWS KMS does not rotate HMAC keys automatically. Links expire "
                "within approvers.link_ttl_hours, so replacing the key by hand costs only outstanding links."
            },
        )

        def table(construct_id: str, **kwargs) -> dynamodb.Table:
            return dynamodb.Table(
                scope,
                construct_id,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
                encryption_key=key,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                deletion_protection=True,
                removal_policy=RemovalPolicy.RETAIN,
                **kwargs,
            )

        # Used links, committed decisions and approvals counted towards a quorum per (group, version, environment),
        # sent e-mails (modelgate.approval.state).
        self.state = table(
            "ApprovalState",
            partition_key=dynamodb.Attribute(name=state.PARTITION_KEY, type=dynamodb.AttributeType.STRING),
            time_to_live_attribute=state.TTL_ATTRIBUTE,
        )
        # Every decision of every model, append-only (modelgate.approval.history).
        self.history = table(
            "ApprovalHistory",
            partition_key=dynamodb.Attribute(name=history.PARTITION_KEY, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=history.SORT_KEY, type=dynamodb.AttributeType.STRING),
        )
        self.history.add_global_secondary_index(
            index_name=history.VERSION_INDEX,
            partition_key=dynamodb.Attribute(name=history.VERSION_INDEX_KEY, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=history.SORT_KEY, type=dynamodb.AttributeType.STRING),
        )

    def grant_issue_links(self, grantee: iam.IGrantable) -> None:
        """Sign links and record the e-mails sent (one per recipient per request; retries send nothing)."""
        self.signing_key.grant(grantee, "kms:GenerateMac")
        self.state.grant(grantee, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem")
        self._key.grant_encrypt_decrypt(grantee)

    def grant_decide(self, grantee: iam.IGrantable) -> None:
        """Verify presented links, sign the page's CSRF and sign-in tokens, commit decisions exactly once, and
        append to the history: only ever conditional puts on the table itself (never update or delete, nor its
        index)."""
        self.signing_key.grant(grantee, "kms:GenerateMac", "kms:VerifyMac")
        # A quorum short of its count commits with a transaction ConditionCheck (its own IAM action).
        self.state.grant(
            grantee, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"
        )
        self._key.grant_encrypt_decrypt(grantee)
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=["dynamodb:PutItem"], resources=[self.history.table_arn])
        )
