"""The serving deploy step: make one model group's multi-model endpoint in an environment serve exactly the
version approved for that group there.

1. Read the group's ApprovedModel of the environment from Parameter Store (none: nothing approved, serve nothing).
2. Read the version's manifest at `model_data_url`; for each archive, copy it to the group's prefix
   (`models/<group>/`, modelgate/serving/deployment.py) under its versioned target name
   (`v<version>/<customer>.tar.gz`), streaming it through SHA-256 and uploading only bytes whose digest and size
   match the manifest. An archive already in place with the same digest is left alone.
3. Write the group's deployment record (the invoke Lambda switches to the new version here, all archives present).
4. Delete every object under the group's prefix that the record does not list: older versions, leftovers.
Nothing outside the group's prefix and record is read or written: other groups' endpoints are never touched.

Idempotent: a second run with the same approval copies and deletes nothing. If anything fails before step 3
(bad checksum, missing archive, malformed manifest) the previous deployment keeps serving unchanged and the
error propagates, so the Lambda's failure destination and alarm tell a person: a corrupt artifact must not take
an environment's serving down.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from modelgate.model_repository import MANIFEST_NAME, Manifest, ManifestFormatError, target_model
from modelgate.parameters import ApprovedModel, ApprovedModelFormatError
from modelgate.serving.deployment import Deployment, DeploymentFormatError, deployment_key, model_prefix

SHA256_METADATA = "sha256"  # user metadata of a served archive: the digest it was verified against
_CHUNK = 1024 * 1024
_SPOOL_IN_MEMORY = 64 * 1024 * 1024  # larger archives spill to /tmp (Lambda ephemeral storage)


class DeployError(Exception):
    """The approved model cannot be deployed; nothing was switched or removed."""


class ApprovedModelMismatch(DeployError):
    pass


class ArtifactsUnavailable(DeployError):
    pass


class ChecksumMismatch(DeployError):
    pass


@dataclass(frozen=True)
class ServingTarget:
    """Where one group's endpoint of an environment serves from, and which approval it serves."""

    bucket: str  # the environment's model-repository bucket
    parameter_name: str  # modelgate.parameters.parameter_name(project, group, environment)
    model_package_group: str
    environment: str

    @property
    def prefix(self) -> str:
        return model_prefix(self.model_package_group)

    @property
    def record_key(self) -> str:
        return deployment_key(self.model_package_group)


@dataclass
class DeployReport:
    deployment: Deployment
    copied: list[str] = field(default_factory=list)  # target names uploaded by this run
    unchanged: list[str] = field(default_factory=list)  # target names already in place
    removed: list[str] = field(default_factory=list)  # object keys deleted under MME_PREFIX
    record_written: bool = False

    def summary(self) -> dict[str, Any]:
        return {
            "model_package_group": self.deployment.model_package_group,
            "environment": self.deployment.environment,
            "model_version": self.deployment.model_version,
            "models": len(self.deployment.customers),
            "copied": len(self.copied),
            "unchanged": len(self.unchanged),
            "removed": len(self.removed),
            "record_written": self.record_written,
        }


def read_approved(ssm, parameter_name: str) -> ApprovedModel | None:
    try:
        value = ssm.get_parameter(Name=parameter_name)["Parameter"]["Value"]
    except ClientError as error:
        if error.response["Error"]["Code"] == "ParameterNotFound":
            return None
        raise
    try:
        return ApprovedModel.from_json(value)
    except (ApprovedModelFormatError, ValueError) as error:
        raise ApprovedModelMismatch(f"{parameter_name}: {error}") from None


def split_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/prefix/ (or .../manifest.json) -> (bucket, prefix ending in '/')."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ApprovedModelMismatch(f"model_data_url {url!r} is not an s3:// URL")
    prefix = parts.path.lstrip("/")
    if prefix.endswith(MANIFEST_NAME):
        prefix = prefix[: -len(MANIFEST_NAME)]
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return parts.netloc, prefix


def read_manifest(s3, bucket: str, prefix: str, model_package_group: str) -> Manifest:
    key = prefix + MANIFEST_NAME
    try:
        text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
        manifest = Manifest.from_json(text)
    except ClientError as error:
        raise ArtifactsUnavailable(f"cannot read s3://{bucket}/{key}: {error.response['Error']['Code']}") from None
    except (ManifestFormatError, ValueError) as error:  # ValueError: a customer id the contract refuses
        raise ArtifactsUnavailable(f"s3://{bucket}/{key}: {error}") from None
    if manifest.model_package_group != model_package_group:
        raise ApprovedModelMismatch(
            f"s3://{bucket}/{key} belongs to group {manifest.model_package_group!r}, not {model_package_group!r}"
        )
    if not manifest.archives:
        raise ArtifactsUnavailable(f"s3://{bucket}/{key} lists no archives")
    return manifest


def read_deployment(s3, bucket: str, model_package_group: str) -> Deployment | None:
    try:
        body = s3.get_object(Bucket=bucket, Key=deployment_key(model_package_group))["Body"].read()
    except ClientError as error:
        if error.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    try:
        return Deployment.from_json(body)
    except DeploymentFormatError:
        return None  # rewritten by this run


def _served_digest(s3, bucket: str, key: str) -> str | None:
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return head.get("Metadata", {}).get(SHA256_METADATA)


def _copy_verified(s3, source: tuple[str, str], target: tuple[str, str], sha256: str, size: int, version: int):
    """Stream the source through SHA-256 into a spooled file; upload it only if digest and size match."""
    bucket, key = source
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except ClientError as error:
        raise ArtifactsUnavailable(f"cannot read s3://{bucket}/{key}: {error.response['Error']['Code']}") from None
    digest, length = hashlib.sha256(), 0
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        for chunk in iter(lambda: body.read(_CHUNK), b""):
            digest.update(chunk)
            length += len(chunk)
            spool.write(chunk)
        if digest.hexdigest() != sha256 or length != size:
            raise ChecksumMismatch(
                f"s3://{bucket}/{key}: SHA-256 {digest.hexdigest()} ({length} bytes) does not match the manifest's "
                f"{sha256} ({size} bytes); refusing to serve it"
            )
        spool.seek(0)
        s3.upload_fileobj(
            spool,
            target[0],
            target[1],
            ExtraArgs={"Metadata": {SHA256_METADATA: sha256, "model-version": str(version)}},
        )


def _served_keys(s3, bucket: str, prefix: str) -> list[str]:
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def _delete(s3, bucket: str, keys: list[str]) -> None:
    for start in range(0, len(keys), 1000):
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        result = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        if result.get("Errors"):
            first = result["Errors"][0]
            raise DeployError(f"could not delete s3://{bucket}/{first['Key']}: {first.get('Code')}")


def deploy_approved(
    *,
    ssm,
    s3,
    target: ServingTarget,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DeployReport:
    """Make the group's prefix in `target.bucket` hold exactly the group's approved version of the environment."""
    approved = read_approved(ssm, target.parameter_name)
    now = clock().isoformat(timespec="seconds")
    if approved is None:
        desired = Deployment(target.model_package_group, target.environment, None, None, (), now)
        report = DeployReport(desired)
        manifest = None
    else:
        if approved.environment != target.environment or approved.model_package_group != target.model_package_group:
            raise ApprovedModelMismatch(
                f"{target.parameter_name} approves {approved.model_package_group!r} for {approved.environment!r}; "
                f"this step serves {target.model_package_group!r} in {target.environment!r}"
            )
        source_bucket, source_prefix = split_s3_url(approved.model_data_url)
        manifest = read_manifest(s3, source_bucket, source_prefix, target.model_package_group)
        customers = tuple(sorted(entry.customer for entry in manifest.archives))
        desired = Deployment(
            target.model_package_group,
            target.environment,
            approved.model_version,
            approved.model_package_arn,
            customers,
            now,
        )
        report = DeployReport(desired)
        for entry in sorted(manifest.archives, key=lambda e: e.customer):
            name = target_model(approved.model_version, entry.customer)
            key = target.prefix + name
            if _served_digest(s3, target.bucket, key) == entry.sha256:
                report.unchanged.append(name)
                continue
            _copy_verified(
                s3,
                (source_bucket, source_prefix + entry.archive),
                (target.bucket, key),
                entry.sha256,
                entry.size,
                approved.model_version,
            )
            report.copied.append(name)

    current = read_deployment(s3, target.bucket, target.model_package_group)
    if not desired.same_content(current):
        s3.put_object(
            Bucket=target.bucket,
            Key=target.record_key,
            Body=desired.to_json().encode(),
            ContentType="application/json",
        )
        report.record_written = True
    else:
        report.deployment = current

    keep = {target.prefix + target_model(desired.model_version, c) for c in desired.customers} if manifest else set()
    report.removed = sorted(key for key in _served_keys(s3, target.bucket, target.prefix) if key not in keep)
    _delete(s3, target.bucket, report.removed)
    return report
