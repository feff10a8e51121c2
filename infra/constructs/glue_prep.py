"""The Glue prep engine: the AWS Glue job (pipelines/glue/prep_job.py) and the two Lambdas that let a SageMaker
Pipeline CallbackStep start it and wait for it (modelgate/glue_prep.py).

    pipeline CallbackStep -> Requests queue (KMS, DLQ + alarm) -> Start function -> glue:StartJobRun
    Glue Job State Change -> EventBridge rule -> Finish function (failure queue + alarm) -> SendPipelineExecutionStep*

Every alarm (dead letters, function errors) e-mails `notify` through the failure queue's topic.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Names, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as assets
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.build.pipeline_assets import GLUE_SCRIPT, glue_libraries
from infra.constructs.failure_alarm import FailureQueue, alarm_on_waiting_messages
from infra.constructs.modelgate_function import ModelGateFunction
from infra.constructs.training_pipeline import grant_read_object
from modelgate.glue_prep import FINAL_STATES

START_TIMEOUT_SECONDS = 30
MEMORY_MIB = 256  # two small API calls per invocation


def encrypted_queue(scope: Construct, construct_id: str, *, key: kms.IKey, **kwargs) -> sqs.Queue:
    """A queue encrypted with the environment's data key (the pipeline's CallbackStep writes with its role)."""
    return sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.KMS,
        encryption_master_key=key,
        data_key_reuse=Duration.hours(1),  # fewer KMS calls
        enforce_ssl=True,
        retention_period=Duration.days(14),  # the longest SQS allows: time to look at what failed
        **kwargs,
    )


class GluePrep(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        raw_data: s3.IBucket,
        curated_data: s3.IBucket,
        artifacts: s3.IBucket,
        layer: lambda_.ILayerVersion,
        glue_version: str,
        worker_type: str,
        workers: int,
        timeout_minutes: int,
        notify: tuple[str, ...],
    ) -> None:
        """`notify`: e-mail addresses told about failed requests and job-state events (approvers of the env)."""
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        script = assets.Asset(self, "Script", path=str(GLUE_SCRIPT))
        libraries = assets.Asset(self, "Libraries", path=str(glue_libraries()))

        self.role = iam.Role(self, "JobRole", assumed_by=iam.ServicePrincipal("glue.amazonaws.com"))
        raw_data.grant_read(self.role)
        curated_data.grant_read_write(self.role)  # Spark lists and replaces its output prefix
        artifacts.grant_put(self.role)  # prep_report.json
        grant_read_object(self.role, script)
        grant_read_object(self.role, libraries)
        key.grant_encrypt_decrypt(self.role)  # the security configuration's S3 and bookmark encryption
        glue_logs = stack.format_arn(
            service="logs", resource="log-group", resource_name="/aws-glue/*", arn_format=ArnFormat.COLON_RESOURCE_NAME
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:AssociateKmsKey"],
                resources=[glue_logs],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": "Glue"}},
            )
        )
        # Glue encrypts its CloudWatch logs with the data key: CloudWatch Logs must be allowed to use it, for
        # Glue's log groups only.
        key.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
                resources=["*"],
                conditions={"ArnLike": {"kms:EncryptionContext:aws:logs:arn": glue_logs}},
            )
        )

        security = glue.CfnSecurityConfiguration(
            self,
            "Security",
            name=Names.unique_resource_name(self, max_length=128, separator="-"),
            encryption_configuration=glue.CfnSecurityConfiguration.EncryptionConfigurationProperty(
                s3_encryptions=[
                    glue.CfnSecurityConfiguration.S3EncryptionProperty(
                        s3_encryption_mode="SSE-KMS", kms_key_arn=key.key_arn
                    )
                ],
                cloud_watch_encryption=glue.CfnSecurityConfiguration.CloudWatchEncryptionProperty(
                    cloud_watch_encryption_mode="SSE-KMS", kms_key_arn=key.key_arn
                ),
                job_bookmarks_encryption=glue.CfnSecurityConfiguration.JobBookmarksEncryptionProperty(
                    job_bookmarks_encryption_mode="CSE-KMS", kms_key_arn=key.key_arn
                ),
            ),
        )
        self.job = glue.CfnJob(
            self,
            "Job",
            role=self.role.role_arn,
            description="ModelGate prep: raw JSON readings -> Parquet per customer + quarantine (Spark)",
            command=glue.CfnJob.JobCommandProperty(
                name="glueetl", python_version="3", script_location=script.s3_object_url
            ),
            glue_version=glue_version,
            worker_type=worker_type,
            number_of_workers=workers,
            timeout=timeout_minutes,
            max_retries=0,  # the pipeline execution decides what to retry
            execution_property=glue.CfnJob.ExecutionPropertyProperty(max_concurrent_runs=5),
            security_configuration=security.ref,
            default_arguments={
                "--extra-py-files": libraries.s3_object_url,
                # Off: every run is told exactly which input and output prefixes to use (one per pipeline
                # execution); a bookmark would skip raw files an earlier run saw and yield a partial data set.
                "--job-bookmark-option": "job-bookmark-disable",
                "--enable-continuous-cloudwatch-log": "true",
                "--enable-metrics": "true",
            },
        )
        self.job_arn = stack.format_arn(service="glue", resource="job", resource_name=self.job.ref)

        # CallbackStep -> queue -> Start
        self.requests_dead_letters = encrypted_queue(self, "RequestsDeadLetters", key=key)
        self.requests = encrypted_queue(
            self,
            "Requests",
            key=key,
            visibility_timeout=Duration.seconds(START_TIMEOUT_SECONDS * 6),  # AWS: >= 6x the function timeout
            dead_letter_queue={"queue": self.requests_dead_letters, "max_receive_count": 5},
        )
        # Job-state events the Finish function could not handle, or EventBridge could not deliver (SSE-SQS).
        self.failures = FailureQueue(self, "Failures", key=key, notify=notify, what="ModelGate Glue prep")
        requests_alarm = alarm_on_waiting_messages(
            self,
            "RequestsDeadLettersAlarm",
            self.requests_dead_letters,
            "Glue prep requests: messages are waiting in the dead-letter queue; look at them, then redrive",
        )
        environment = {"GLUE_JOB_NAME": self.job.ref}
        self.start = ModelGateFunction(
            self,
            "Start",
            handler="lambdas.glue_prep_start.handler",
            description="ModelGate Glue prep: start the job run a pipeline CallbackStep asks for",
            environment=environment,
            layer=layer,
            timeout_seconds=START_TIMEOUT_SECONDS,
            memory_size=MEMORY_MIB,
        )
        self.start.function.add_event_source(
            sources.SqsEventSource(self.requests, batch_size=1, report_batch_item_failures=True)
        )
        self.start.role.add_to_policy(
            iam.PolicyStatement(actions=["glue:StartJobRun", "glue:GetJobRuns"], resources=[self.job_arn])
        )

        # Glue Job State Change -> Finish
        self.finish = ModelGateFunction(
            self,
            "Finish",
            handler="lambdas.glue_prep_finish.handler",
            description="ModelGate Glue prep: report the job run's end to the waiting pipeline step",
            environment=environment,
            layer=layer,
            memory_size=MEMORY_MIB,
            on_failure=self.failures.queue,
        )
        self.failures.notify_on(requests_alarm, self.start.alarm_on_errors(), self.finish.alarm_on_errors())
        self.finish.role.add_to_policy(iam.PolicyStatement(actions=["glue:GetJobRun"], resources=[self.job_arn]))
        events.Rule(
            self,
            "JobStateChange",
            description="End of a ModelGate Glue prep job run",
            event_pattern=events.EventPattern(
                source=["aws.glue"],
                detail_type=["Glue Job State Change"],
                detail={"jobName": [self.job.ref], "state": sorted(FINAL_STATES)},
            ),
            targets=[
                targets.LambdaFunction(
                    self.finish.function,
                    retry_attempts=8,
                    max_event_age=Duration.hours(24),
                    dead_letter_queue=self.failures.queue,  # delivery failures (throttling, permissions)
                )
            ],
        )

    def answer_pipeline(self, pipeline_arn: str) -> None:
        """Let the functions answer the callback steps of this pipeline's executions (and only this pipeline's)."""
        resources = [pipeline_arn, f"{pipeline_arn}/execution/*"]
        self.start.role.add_to_policy(
            iam.PolicyStatement(actions=["sagemaker:SendPipelineExecutionStepFailure"], resources=resources)
        )
        self.finish.role.add_to_policy(
            iam.PolicyStatement(
                actions=["sagemaker:SendPipelineExecutionStepSuccess", "sagemaker:SendPipelineExecutionStepFailure"],
                resources=resources,
            )
        )
