"""Deploying a world into the local AWS (sandbox.world): the approval tests' Storage + Approval of four
environments, with the clients as they were made before (a new boto3 Session, so every service model JSON read
again, per client call; every stage re-zipping and re-uploading the same assets) vs now (one client per account
and service, service models read once per process, an asset published once per app)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import boto3

from bench.common import BenchResult, interleaved, median

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tests" / "integration" / "approval" / "world.yaml"
TARGET = 3.0


def _per_call_client(self, service: str, **kwargs):
    session = boto3.Session(region_name=self.region, **self._credentials)
    return session.client(service, endpoint_url=kwargs.pop("endpoint_url", self.url), **kwargs)


def _publish_every_time(aws, assembly: Path, assets_file: Path) -> None:
    from sandbox import cloudformation

    s3 = aws.client("s3")
    for asset in json.loads(assets_file.read_text()).get("files", {}).values():
        source = assembly / asset["source"]["path"]
        zipped = asset["source"].get("packaging") == "zip"
        body = cloudformation._zip_directory.__wrapped__(source) if zipped else source.read_bytes()
        for destination in asset["destinations"].values():
            bucket = cloudformation._substitute(destination["bucketName"], aws)
            cloudformation._ensure_bucket(s3, bucket, aws.region)
            s3.put_object(Bucket=bucket, Key=cloudformation._substitute(destination["objectKey"], aws), Body=body)


def run(quick: bool = False) -> BenchResult:
    from infra.config import load_config
    from sandbox import aws as local_aws
    from sandbox import cloudformation
    from sandbox.world import LocalWorld, cached_synth

    assembly, config = cached_synth(CONFIG), load_config(CONFIG)
    current = (local_aws.LocalAccount.client, cloudformation._publish_assets)
    before = (_per_call_client, _publish_every_time)

    def deploy(functions) -> float:
        local_aws.LocalAccount.client, cloudformation._publish_assets = functions
        try:
            started = time.perf_counter()
            with LocalWorld(assembly, config, stacks=("Storage", "Approval"), hold=False):
                return time.perf_counter() - started
        finally:
            local_aws.LocalAccount.client, cloudformation._publish_assets = current

    runs = 1 if quick else 3
    deploy(current)  # warm-up: imports, the synthesized assembly in the page cache
    samples = interleaved(runs, before=lambda: deploy(before), now=lambda: deploy(current))
    ratio = median(samples["before"]) / median(samples["now"])
    return BenchResult(
        name="Local deploy: the approval tests' world (Storage + Approval x 4 environments)",
        ratio_label="per-call clients / cached clients (median wall time of deploy + world start)",
        ratio=ratio,
        target=f">= {TARGET}",
        met=ratio >= TARGET,
        rows=[
            ("runs (interleaved, after one warm-up)", str(runs)),
            ("per-call Session + client, assets every stage, median", f"{median(samples['before']):.1f} s"),
            ("cached clients, shared loader, assets once, median", f"{median(samples['now']):.1f} s"),
        ],
        notes="A fresh boto3 Session per client re-reads each service's JSON models (~0.2 s a client); a "
        "stage deploy makes about 20 clients, a role-assumed function 6.",
    )
