"""The approval and promotion workflow of one environment, for every model of the platform (issues 4 and 13).

A list of parts and the grants between them:
- `ApprovalRequests` (infra/constructs/approval_requests.py): registry events (first environment of the chain)
  or promotion requests (later ones) -> e-mails with signed links; retries + on-failure queue with an alarm;
- `ApprovalLinks` (infra/constructs/approval_links.py): API Gateway REST + WAF -> confirmation pages, OIDC sign-in
  against the environment's Cognito pool (`ApproverSignIn`, one group per distinct approvers group), decisions ->
  registry metadata + the model's Parameter Store parameter of this environment + the history table;
- `Promotions` (infra/constructs/promotions.py, all but the last environment): a finished run -> promotion request
  on the next environment's event bus;
- `PromotionGate` (infra/constructs/promotion_gate.py): the role the CI/CD pipeline assumes to read the approved
  models;
- the approval store (infra/constructs/approval_store.py, in the Storage stack): `grant_issue_links`, `grant_decide`.

Every flow is keyed by (model package group, environment); the Lambdas learn the chain from
`ApprovalSettings.environ()` (checked at synth against Lambda's 4 KB environment limit) and the models from
`ApprovalSettings.bundled_files()`, a JSON file in their code package (no limit that a platform reaches).
Multi-account: the Model Registry lives in the first environment's account; this stack reaches it by ARN (each
group's resource policy grants the later environments' accounts, stacks/topology.py). Each environment signs
links with its own KMS key and writes only its own parameters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ses as ses
from constructs import Construct

from infra.build.lambda_bundle import dependencies_layer
from infra.build.nag import KMS_GRANT_ACTIONS, S3_GRANT_ACTIONS, regex, suppress
from infra.config import ConfigError, Environment, ModelProject, Project
from infra.constructs.approval_links import ROUTES, ApprovalLinks, api_url, rest_api
from infra.constructs.approval_requests import ApprovalRequests
from infra.constructs.approver_sign_in import ApproverSignIn
from infra.constructs.failure_alarm import FailureQueue
from infra.constructs.model_artifacts import CROSS_ACCOUNT_READ_FINDINGS, grant_read_registered_models
from infra.constructs.modelgate_function import FUNCTION_ENVIRONMENT
from infra.constructs.promotion_gate import PromotionGate, parameter_arn
from infra.constructs.promotions import Promotions
from modelgate.approval.settings import (
    LAMBDA_ENVIRONMENT_LIMIT,
    ApprovalSettings,
    SignInSettings,
    environ_size,
    model_approvals,
)
from stacks.storage_stack import StorageStack
from stacks.topology import Topology


def deployed_environ_size(settings: ApprovalSettings, sign_in: SignInSettings, region: str, account: str) -> int:
    """The approval-api function's environment size once deployed. At synth the resource names are tokens, so
    they are replaced by values of the longest length AWS gives them (table names: DynamoDB's 255)."""
    stand_in = dataclasses.replace(
        settings,
        signing_key_id=f"arn:aws:kms:{region}:{account}:key/{'0' * 36}",
        state_table="t" * 255,
        history_table="t" * 255,
        api_url=f"https://{'a' * 10}.execute-api.{region}.amazonaws.com/v1",
    )
    issuer = f"https://cognito-idp.{region}.amazonaws.com/{region}_{'p' * 9}"
    domain = f"https://{'d' * 63}.auth.{region}.amazoncognito.com"
    sign_in = dataclasses.replace(
        sign_in,
        issuer=issuer,
        jwks_url=f"{issuer}/.well-known/jwks.json",
        authorize_url=f"{domain}/oauth2/authorize",
        token_url=f"{domain}/oauth2/token",
        client_id="c" * 26,
    )
    return environ_size({**stand_in.environ(), **sign_in.environ(), **FUNCTION_ENVIRONMENT})


class ApprovalStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        project: Project,
        environment: Environment,
        models: Sequence[ModelProject],
        storage: StorageStack,
        topology: Topology,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        env = environment.name
        approvals = model_approvals(models, env)
        groups = [approval.group for approval in approvals]
        packages = [topology.packages_arn(group) for group in groups]
        layer = dependencies_layer(self)
        store = storage.approval

        api = rest_api(self, env)
        url = api_url(api)
        self.sign_in = ApproverSignIn(
            self,
            "ApproverSignIn",
            groups=[environment.approvers.group, *(approval.approvers_group for approval in approvals)],
            domain_prefix=f"{project.name}-{env}-{environment.account}",
            callback_url=f"{url}/auth/callback",
            company=environment.approvers.identity_provider,
        )
        settings = ApprovalSettings(
            project=project.name,
            environment=env,
            chain=topology.chain,
            models=approvals,
            registry_account=topology.registry_account,
            registry_region=topology.registry_region,
            signing_key_id=store.signing_key.key_arn,
            state_table=store.state.table_name,
            history_table=store.history.table_name,
            sender_email=environment.sender_email,
            api_url=url,
            next_event_bus=topology.next_event_bus,
        )
        self._check_environment_size(settings, env)
        files = settings.bundled_files()  # the same models' list in each function's package
        self.failures = FailureQueue(
            self,
            "Failures",
            key=storage.key,
            notify=tuple(dict.fromkeys(email for approval in approvals for email in approval.approver_emails)),
            what=f"ModelGate approval e-mails / promotion requests ({env})",
        )
        sender = ses.EmailIdentity(self, "Sender", identity=ses.Identity.email(environment.sender_email))

        self.requests = ApprovalRequests(
            self,
            "RequestApproval",
            project=project.name,
            environment=env,
            receives_versions=topology.receives_versions(env),
            packages_arns=packages,
            groups=groups,
            registry=(topology.registry_account, topology.registry_region),
            previous_account=topology.previous_account,
            environ=settings.environ(),
            files=files,
            layer=layer,
            failures=self.failures.queue,
        )
        role = self.requests.function.role
        store.grant_issue_links(role)
        sender.grant_send_email(role)  # ses:SendEmail, ses:SendRawEmail on the sender identity
        # The evaluation report the version's ModelMetrics point at, in whichever environment trained it.
        grant_read_registered_models(role, artifacts=storage.artifacts, other_accounts=topology.other_accounts)

        self.links = ApprovalLinks(
            self,
            "ApprovalApi",
            api=api,
            environment=env,
            environ={**settings.environ(), **self.sign_in.settings().environ()},
            files=files,
            layer=layer,
        )
        role = self.links.function.role
        store.grant_decide(role)
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["sagemaker:DescribeModelPackage", "sagemaker:UpdateModelPackage"], resources=packages
            )
        )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                # GetParameter: the confirmation page says which version serves now.
                actions=["ssm:PutParameter", "ssm:GetParameter"],
                # Every model's parameter of its own environment only.
                resources=[parameter_arn(self, project.name, group, env) for group in groups],
            )
        )
        grant_read_registered_models(role, artifacts=storage.artifacts, other_accounts=topology.other_accounts)

        self.promotions: Promotions | None = None
        if topology.next_event_bus:
            self.promotions = Promotions(
                self,
                "PostInference",
                project=project.name,
                environment=env,
                next_event_bus=topology.next_event_bus,
                packages_arns=packages,
                artifacts=storage.artifacts,
                environ=settings.environ(),
                files=files,
                layer=layer,
                failures=self.failures.queue,
            )

        self.gate: PromotionGate | None = None
        if topology.cicd_account:
            self.gate = PromotionGate(
                self, "PromotionGate", project=project.name, environment=env, groups=groups, cicd=topology.cicd_account
            )

        CfnOutput(self, "ApprovalApiUrl", value=url)
        CfnOutput(self, "HistoryTable", value=store.history.table_name)  # for `modelgate history`
        self._suppressions(reads_other_accounts=bool(topology.other_accounts))

    def _check_environment_size(self, settings: ApprovalSettings, env: str) -> None:
        """Lambda refuses a function whose environment exceeds 4 KB. The models' list ships in the code package
        (ApprovalSettings.bundled_files), so what is left does not grow with the number of models."""
        size = deployed_environ_size(settings, self.sign_in.settings(), self.region, self.account)
        if size > LAMBDA_ENVIRONMENT_LIMIT:
            raise ConfigError(
                f"environments.{env}: the approval functions' environment would be {size} bytes, over Lambda's "
                f"{LAMBDA_ENVIRONMENT_LIMIT}-byte limit: shorten project.name, sender_email or the identity "
                "provider's settings."
            )

    def _suppressions(self, *, reads_other_accounts: bool) -> None:
        public = (
            "Approval links are opened from e-mail in a browser, which sends no Authorization header: the handler "
            "authenticates every request itself (KMS-signed link token + OIDC sign-in against this environment's "
            "Cognito pool, approvers-group check, CSRF token on POST)."
        )
        methods = {"links/{action}": ("GET", "HEAD", "POST"), "auth/callback": ("GET",)}
        for route in ROUTES:
            for method in methods[route]:
                suppress(
                    self,
                    f"Api/Default/{route}/{method}/Resource",
                    {"AwsSolutions-APIG4": public, "AwsSolutions-COG4": public},
                )
        table_key = [*KMS_GRANT_ACTIONS]
        registry = regex(r"Resource::arn:aws:sagemaker:[a-z0-9-]+:\d{12}:model-package\/[a-z0-9-]+\/\*")
        artifacts = [*S3_GRANT_ACTIONS, regex(r"Resource::<Artifacts[0-9A-F]{8}\.Arn>\/\*")]
        reports = [*artifacts, *(CROSS_ACCOUNT_READ_FINDINGS if reads_other_accounts else [])]
        suppress(
            self,
            "RequestApproval/Default/Role/DefaultPolicy/Resource",
            {
                "AwsSolutions-IAM5": "Versions of the models' package groups it e-mails about (the version is "
                "only known from the event), the tables' KMS key (CDK's grant), reading the evaluation reports "
                "of registered versions: this environment's artifacts bucket, and models/ objects in buckets of the "
                "project's other accounts (s3:ResourceAccount), decrypted only through S3; and (first environment "
                "of the chain) describing the pipeline execution that registered a version (named by the version "
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
            "ApprovalApi/Default/Role/DefaultPolicy/Resource",
            {
                "AwsSolutions-IAM5": "Versions of the models' package groups it decides on (the version comes "
                "from the link), the tables' KMS key (CDK's grant), and reading the evaluation reports of registered "
                "versions: this environment's artifacts bucket, and models/ objects in buckets of the project's "
                "other accounts (s3:ResourceAccount), decrypted only through S3."
            },
            {"AwsSolutions-IAM5": [*table_key, registry, *reports]},
        )
        if self.promotions is not None:
            suppress(
                self,
                "PostInference/Default/Role/DefaultPolicy/Resource",
                {
                    "AwsSolutions-IAM5": "Transform jobs and models of this environment (the job is only known from "
                    "the event), versions of the models' package groups, and reading the runs' metrics files "
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
