"""The approval and promotion workflow of one environment (issue 4).

- request-approval Lambda: registry events (registry environment) or promotion requests (later environments)
  -> e-mails with signed links; retries + on-failure queue with an alarm;
- approval API (API Gateway REST + WAF) -> approval-api Lambda: confirmation pages, OIDC sign-in against the
  environment's Cognito pool, decisions -> registry metadata + this environment's Parameter Store parameter +
  the history table;
- post-inference Lambda (all but prod): a finished transform job / inference run -> promotion request on the
  next environment's event bus;
- the promotion-gate role the CI/CD pipeline assumes to read this environment's approved model.

Multi-account: the Model Registry lives in the registry (dev) account; this stack reaches it by ARN (the model
package group's resource policy must grant the later environments' accounts, see stacks/topology.py).
Each environment signs links with its own KMS key and writes only its own parameter.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, Stack, Tags
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ses as ses
from constructs import Construct

from modelgate.approval import events as approval_events
from modelgate.approval.settings import ApprovalSettings
from modelgate.config import Environment, Project
from modelgate.environments import ENVIRONMENTS
from modelgate.parameters import parameter_name
from stacks.approver_sign_in import ApproverSignIn
from stacks.event_bus_statement import EventBusStatement
from stacks.failure_alarm import FailureQueue
from stacks.firewall import ManagedRuleGroup, protect_stage
from stacks.lambda_bundle import dependencies_layer
from stacks.model_artifacts import CROSS_ACCOUNT_READ_FINDINGS, grant_read_registered_models
from stacks.modelgate_function import ModelGateFunction
from stacks.nag import KMS_GRANT_ACTIONS, S3_GRANT_ACTIONS, regex, suppress
from stacks.storage_stack import StorageStack
from stacks.topology import Topology

API_STAGE = "v1"
API_RATE_PER_SECOND, API_BURST = 10, 20  # people clicking links; anything faster is not a person


def promotion_gate_role_name(project: str, environment: str) -> str:
    """The role the CI/CD pipeline (another account) assumes: a name both sides derive, since CDK cannot pass
    references between stages of different accounts."""
    return f"{project}-{environment}-promotion-gate"


class ApprovalStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        project: Project,
        environment: Environment,
        storage: StorageStack,
        topology: Topology,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.settings_env = environment
        env, group = environment.name, project.model_package_group
        layer = dependencies_layer(self)

        self.api = apigateway.RestApi(
            self,
            "Api",
            description=f"ModelGate approval links ({env})",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            cloud_watch_role=False,  # the account's one role is the Storage stack's
            deploy_options=self._stage_options(),
        )
        api_url = f"https://{self.api.rest_api_id}.execute-api.{self.region}.{self.url_suffix}/{API_STAGE}"
        self.sign_in = ApproverSignIn(
            self,
            "ApproverSignIn",
            group=environment.approvers.group,
            domain_prefix=f"{project.name}-{env}-{environment.account}",
            callback_url=f"{api_url}/auth/callback",
            company=environment.approvers.identity_provider,
        )
        settings = ApprovalSettings(
            project=project.name,
            model_package_group=group,
            environment=env,
            registry_account=topology.registry_account,
            registry_region=topology.registry_region,
            signing_key_id=storage.approval_signing_key.key_arn,
            state_table=storage.approval_state.table_name,
            history_table=storage.approval_history.table_name,
            sender_email=environment.sender_email,
            approver_emails=environment.approvers.emails,
            approvers_group=environment.approvers.group,
            link_ttl_seconds=environment.approvers.link_ttl_hours * 3600,
            api_url=api_url,
            next_event_bus=topology.next_event_bus,
            metric_threshold=environment.training.metric_threshold,
        )
        self.failures = FailureQueue(
            self,
            "Failures",
            key=storage.key,
            notify=environment.approvers.emails,
            what=f"ModelGate approval e-mails / promotion requests ({env})",
        )
        sender = ses.EmailIdentity(self, "Sender", identity=ses.Identity.email(environment.sender_email))
        registry_packages = topology.packages_arn(group)

        # -- request-approval: registry events (dev) / promotion requests (later environments) -> e-mails ----------
        def event_function(construct_id: str, handler: str, description: str) -> ModelGateFunction:
            """Invoked asynchronously by EventBridge: retried, then kept in the failure queue."""
            return ModelGateFunction(
                self,
                construct_id,
                handler=handler,
                description=description,
                environment=settings.environ(),
                layer=layer,
                timeout_seconds=60,
                on_failure=self.failures.queue,
            )

        self.request_approval = event_function(
            "RequestApproval", "lambdas.request_approval.handler", f"ModelGate: e-mail approval links ({env})"
        )
        role = self.request_approval.role
        storage.approval_signing_key.grant(role, "kms:GenerateMac")
        storage.approval_state.grant(
            role, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"
        )
        storage.key.grant_encrypt_decrypt(role)  # the tables' KMS key
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["sagemaker:DescribeModelPackage"], resources=[registry_packages])
        )
        if env == ENVIRONMENTS[0]:
            # Separation of duties: who really started the run that registered a version (CreatedBy of the
            # pipeline execution), recorded on the version (modelgate.approval.registrant).
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["sagemaker:DescribePipelineExecution"],
                    resources=[
                        f"arn:aws:sagemaker:{topology.registry_region}:{topology.registry_account}:pipeline/*/execution/*"
                    ],
                )
            )
            role.add_to_principal_policy(
                iam.PolicyStatement(actions=["sagemaker:UpdateModelPackage"], resources=[registry_packages])
            )
        sender.grant_send_email(role)  # ses:SendEmail, ses:SendRawEmail on the sender identity
        # The evaluation report the version's ModelMetrics point at, in whichever environment trained it.
        grant_read_registered_models(role, artifacts=storage.artifacts, other_accounts=topology.other_accounts)
        if env == ENVIRONMENTS[0]:
            pattern = events.EventPattern(
                source=[approval_events.REGISTRY_SOURCE],
                detail_type=[approval_events.REGISTRY_DETAIL_TYPE],
                detail={"ModelPackageGroupName": [group], "ModelApprovalStatus": ["PendingManualApproval"]},
            )
        else:
            self._promotion_bus(project.name, env, topology.previous_account)
            pattern = events.EventPattern(
                source=[approval_events.PROMOTION_SOURCE],
                detail_type=[approval_events.PROMOTION_DETAIL_TYPE],
                detail={
                    "target_environment": [env],
                    "model_package_arn": [{"prefix": registry_packages.removesuffix("*")}],
                },
            )
        self._route(
            "ApprovalRequested",
            pattern,
            self.request_approval,
            f"Approval requests for {group} in {env} -> approval e-mails",
            bus=None if env == ENVIRONMENTS[0] else self.promotion_bus,
        )

        # -- the approval API ------------------------------------------------------------------------------------
        self.approval_api = ModelGateFunction(
            self,
            "ApprovalApi",
            handler="lambdas.approval_api.handler",
            description=f"ModelGate: approval pages and decisions ({env})",
            environment={**settings.environ(), **self.sign_in.settings().environ()},
            layer=layer,
        )
        role = self.approval_api.role
        storage.approval_signing_key.grant(role, "kms:GenerateMac", "kms:VerifyMac")
        storage.approval_state.grant(role, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
        storage.key.grant_encrypt_decrypt(role)  # the tables' KMS key
        # Append-only: the history table is only ever written with conditional puts, never updated or deleted
        # (the table itself, not its index; its KMS key is granted with the state table above).
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=["dynamodb:PutItem"], resources=[storage.approval_history.table_arn])
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"],
                resources=[registry_packages],
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                # GetParameter: the confirmation page says which version serves now.
                actions=["ssm:PutParameter", "ssm:GetParameter"],
                resources=[self._parameter_arn(project.name, group, env)],  # its own environment's parameter only
            )
        )
        grant_read_registered_models(role, artifacts=storage.artifacts, other_accounts=topology.other_accounts)
        # No test-invoke permissions: the console test button is not how these pages are used.
        integration = apigateway.LambdaIntegration(self.approval_api.function, allow_test_invoke=False)
        links = self.api.root.add_resource("links").add_resource("{action}")
        callback = self.api.root.add_resource("auth").add_resource("callback")
        validator = self.api.add_request_validator(
            "Validator", validate_request_parameters=True, validate_request_body=True
        )
        routes = (
            (links, "GET", {"token": True}),
            (links, "HEAD", {"token": True}),  # link checkers: the page's headers, no body, no change
            (links, "POST", {}),
            (callback, "GET", {}),
        )
        for resource, method, query in routes:
            resource.add_method(
                method,
                integration,
                request_validator=validator,
                request_parameters={f"method.request.querystring.{name}": req for name, req in query.items()},
            )
        # AWS's common and known-bad-inputs rule sets (Log4j-style lookups, exploitable paths) as on the inference
        # API; 300 requests per IP in 5 minutes is far more than a person clicking links.
        protect_stage(
            self,
            self.api.deployment_stage,
            metric_name="modelgate-approval",
            rule_groups=[
                ManagedRuleGroup("AWSManagedRulesCommonRuleSet"),
                ManagedRuleGroup("AWSManagedRulesKnownBadInputsRuleSet"),
            ],
            requests_per_ip=300,
        )

        # -- post-inference: a finished run -> promotion request for the next environment ------------------------
        if topology.next_event_bus:
            self.post_inference = event_function(
                "PostInference",
                "lambdas.post_inference.handler",
                f"ModelGate: request promotion after inference ({env})",
            )
            role = self.post_inference.role
            Tags.of(role).add(approval_events.PROMOTER_TAG, project.name)  # admitted by the next bus's policy
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["sagemaker:DescribeTransformJob", "sagemaker:ListTags"],
                    resources=[f"arn:aws:sagemaker:{self.region}:{self.account}:transform-job/*"],
                )
            )
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["sagemaker:DescribeModel"],
                    resources=[f"arn:aws:sagemaker:{self.region}:{self.account}:model/*"],
                )
            )
            role.add_to_principal_policy(
                iam.PolicyStatement(actions=["sagemaker:DescribeModelPackage"], resources=[registry_packages])
            )
            role.add_to_principal_policy(
                iam.PolicyStatement(actions=["events:PutEvents"], resources=[topology.next_event_bus])
            )
            storage.artifacts.grant_read(role)  # the run's own metrics.json next to its outputs
            self._route(
                "TransformJobCompleted",
                events.EventPattern(
                    source=[approval_events.REGISTRY_SOURCE],
                    detail_type=[approval_events.TRANSFORM_DETAIL_TYPE],
                    detail={"TransformJobStatus": ["Completed"]},
                ),
                self.post_inference,
                f"Completed transform jobs in {env} -> promotion request",
            )
            self._route(
                "InferenceCompleted",
                events.EventPattern(
                    source=[approval_events.INFERENCE_SOURCE],
                    detail_type=[approval_events.INFERENCE_DETAIL_TYPE],
                    detail={"environment": [env]},
                ),
                self.post_inference,
                f"Completed inference runs in {env} -> promotion request",
            )

        # -- the CI/CD promotion gate ----------------------------------------------------------------------------
        if topology.cicd_account:
            gate = iam.Role(
                self,
                "PromotionGate",
                role_name=promotion_gate_role_name(project.name, env),
                assumed_by=iam.AccountPrincipal(topology.cicd_account),
                description=f"CI/CD reads the model approved for {env} before deploying it",
                max_session_duration=Duration.hours(1),
            )
            gate.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["ssm:GetParameter"], resources=[self._parameter_arn(project.name, group, env)]
                )
            )

        CfnOutput(self, "ApprovalApiUrl", value=api_url)
        CfnOutput(self, "HistoryTable", value=storage.approval_history.table_name)  # for `modelgate history`
        self._suppressions(storage, reads_other_accounts=bool(topology.other_accounts))

    # -- helpers -------------------------------------------------------------------------------------------------
    def _parameter_arn(self, project: str, group: str, env: str) -> str:
        return f"arn:aws:ssm:{self.region}:{self.account}:parameter{parameter_name(project, group, env)}"

    def _stage_options(self) -> apigateway.StageOptions:
        access_logs = logs.LogGroup(self, "ApiAccessLogs", retention=logs.RetentionDays.ONE_YEAR)
        return apigateway.StageOptions(
            stage_name=API_STAGE,
            throttling_rate_limit=API_RATE_PER_SECOND,
            throttling_burst_limit=API_BURST,
            logging_level=apigateway.MethodLoggingLevel.ERROR,
            data_trace_enabled=False,  # request bodies carry link tokens: never log them
            access_log_destination=apigateway.LogGroupLogDestination(access_logs),
            access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
                caller=False,
                http_method=True,
                ip=True,
                protocol=True,
                request_time=True,
                resource_path=True,
                response_length=True,
                status=True,
                user=False,
            ),
        )

    def _route(
        self,
        construct_id: str,
        pattern: events.EventPattern,
        function: ModelGateFunction,
        what: str,
        bus: events.IEventBus | None = None,
    ) -> None:
        events.Rule(
            self,
            construct_id,
            description=what,
            event_bus=bus,  # None: the account's default bus (AWS service events)
            event_pattern=pattern,
            targets=[
                targets.LambdaFunction(
                    function.function,
                    dead_letter_queue=self.failures.queue,  # delivery failures (throttling, permissions)
                    retry_attempts=8,
                    max_event_age=Duration.hours(6),
                )
            ],
        )

    def _promotion_bus(self, project: str, env: str, previous_account: str | None) -> None:
        """Promotion requests arrive on a bus of ModelGate's own: on the default bus any principal of the account
        with events:PutEvents could forge them (spam to approvers, fake run metrics on the page). Its policy
        denies every principal not tagged PROMOTER_TAG = project (ModelGate's post-inference roles; operators
        tag the roles allowed to run `modelgate request-promotion`), and admits the previous environment's
        account for requests of source modelgate.promotion."""
        name = approval_events.promotion_bus_name(project, env)
        self.promotion_bus = events.EventBus(self, "PromotionBus", event_bus_name=name)
        bus_arn = self.promotion_bus.event_bus_arn
        EventBusStatement(
            self,
            "OnlyModelGatePromoters",
            event_bus_name=self.promotion_bus.event_bus_name,
            statement_id="modelgate-promoters-only",
            statement={
                "Effect": "Deny",
                "Principal": "*",
                "Action": "events:PutEvents",
                "Resource": bus_arn,
                "Condition": {"StringNotEquals": {f"aws:PrincipalTag/{approval_events.PROMOTER_TAG}": project}},
            },
        )
        if previous_account is None or previous_account == self.account:
            return  # same account: identity policies grant it (and the Deny above still applies)
        EventBusStatement(
            self,
            "PromotionRequestsFromPreviousEnvironment",
            event_bus_name=self.promotion_bus.event_bus_name,
            statement_id=f"modelgate-promotion-from-{previous_account}",
            statement={
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{previous_account}:root"},
                "Action": "events:PutEvents",
                "Resource": bus_arn,
                "Condition": {"StringEquals": {"events:source": approval_events.PROMOTION_SOURCE}},
            },
        )

    def _suppressions(self, storage: StorageStack, *, reads_other_accounts: bool) -> None:
        public = (
            "Approval links are opened from e-mail in a browser, which sends no Authorization header: the handler "
            "authenticates every request itself (KMS-signed link token + OIDC sign-in against this environment's "
            "Cognito pool, approvers-group check, CSRF token on POST)."
        )
        for path in (
            "Api/Default/links/{action}/GET",
            "Api/Default/links/{action}/HEAD",
            "Api/Default/links/{action}/POST",
            "Api/Default/auth/callback/GET",
        ):
            suppress(
                self,
                f"{path}/Resource",
                {"AwsSolutions-APIG4": public, "AwsSolutions-COG4": public},
            )
        table_key = [*KMS_GRANT_ACTIONS]
        registry = regex(r"Resource::arn:aws:sagemaker:[a-z0-9-]+:\d{12}:model-package\/[a-z0-9-]+\/\*")
        artifacts = [*S3_GRANT_ACTIONS, regex(r"Resource::<Artifacts[0-9A-F]{8}\.Arn>\/\*")]
        reports = [*artifacts, *(CROSS_ACCOUNT_READ_FINDINGS if reads_other_accounts else [])]
        suppress(
            self,
            "RequestApproval/Role/DefaultPolicy/Resource",
            {
                "AwsSolutions-IAM5": "Versions of the one model package group it e-mails about (the version is "
                "only known from the event), the tables' KMS key (CDK's grant), reading the evaluation reports "
                "of registered versions: this environment's artifacts bucket, and models/ objects in buckets of the "
                "project's other accounts (s3:ResourceAccount), decrypted only through S3; and (registry "
                "environment) describing the pipeline execution that registered a version (named by the version "
                "itself) to record who started it."
            },
            {
                "AwsSolutions-IAM5": [
                    *table_key,
                    registry,
                    *reports,
                    regex(r"Resource::arn:aws:sagemaker:[a-z0-9-]+:\d{12}:pipeline\/\*\/execution\/\*"),
                ]
            },
        )
        suppress(
            self,
            "ApprovalApi/Role/DefaultPolicy/Resource",
            {
                "AwsSolutions-IAM5": "Versions of the one model package group it decides on (the version comes "
                "from the link), the tables' KMS key (CDK's grant), and reading the evaluation reports of registered "
                "versions: this environment's artifacts bucket, and models/ objects in buckets of the project's "
                "other accounts (s3:ResourceAccount), decrypted only through S3."
            },
            {"AwsSolutions-IAM5": [*table_key, registry, *reports]},
        )
        if hasattr(self, "post_inference"):
            suppress(
                self,
                "PostInference/Role/DefaultPolicy/Resource",
                {
                    "AwsSolutions-IAM5": "Transform jobs and models of this environment (the job is only known from "
                    "the event), versions of the one model package group, and reading the runs' metrics files "
                    "in the artifacts bucket."
                },
                {
                    "AwsSolutions-IAM5": [
                        regex(r"Resource::arn:aws:sagemaker:[a-z0-9-]+:\d{12}:transform-job\/\*"),
                        regex(r"Resource::arn:aws:sagemaker:[a-z0-9-]+:\d{12}:model\/\*"),
                        registry,
                        *artifacts,
                    ]
                },
            )
