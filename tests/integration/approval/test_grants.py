"""The approval flow's grants are the deployed template's: remove one from the Approval stack's template before
the deploy and the flow fails exactly there, with AccessDenied, as it would in AWS (issue 12: the local world is
never kinder than AWS). The rest of the approval tests pass on the unedited templates, so every grant the flow
needs is in them."""

from __future__ import annotations

import pytest

from sandbox import iam as local_iam
from sandbox.approval import ApproverBrowser
from tests.integration.approval.conftest import CONFIG, FIRST, GROUP, PEOPLE, WORLD_CONFIG, World, deployed_world
from tests.integration.test_local_iam import without

pytestmark = pytest.mark.xdist_group("many-models")  # one more world on the worker that deploys a second one


def without_put_parameter(stack: str, template: dict) -> dict:
    return without(template, "ApprovalApiRole", "ssm:PutParameter") if stack == "Approval" else template


@pytest.fixture(scope="module")
def ungranted(tmp_path_factory):
    """The first environment's Storage and Approval, the approval API's role lacking ssm:PutParameter."""
    yield from deployed_world(
        WORLD_CONFIG,
        CONFIG,
        people=PEOPLE,
        environments=(FIRST,),
        edit=without_put_parameter,
        log_dir=tmp_path_factory.mktemp("lambda-logs"),
    )


def test_an_approval_api_role_without_put_parameter_cannot_approve(ungranted):
    deployed = ungranted.get()
    with deployed.use():
        world = World(deployed)
        arn = world.register()
        world.request(FIRST, world.registry_event(arn))
        (mail,) = world.emails()
        browser = ApproverBrowser("alice")
        page = browser.open(mail.links()["approve"])
        assert page.status == 200, page.text()  # reading the version needs no Parameter Store write
        result = browser.submit(page)
        assert result.status >= 500, result.text()
        denied = [d for d in local_iam.DENIALS if d.action == "ssm:PutParameter"]
        assert denied, local_iam.DENIALS
        assert "ApprovalApiRole" in denied[0].principal
        assert world.parameter(FIRST, GROUP) is None
