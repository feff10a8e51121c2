"""How approvers prove who they are: a Cognito user pool whose ID tokens carry `cognito:groups`.

The approval API signs people in with the hosted UI (authorization code + PKCE, public client: no secret to
keep) and checks the approvers group itself. Two ways to be in the group:
- a pool user added by an administrator (`aws cognito-idp admin-add-user-to-group`): claim `cognito:groups`;
- a user of the company directory (config `approvers.identity_provider`, any OIDC provider) federated into the
  pool: the directory's groups claim is mapped to the custom attribute `groups`, claim `custom:groups`.
The client secret of the federation stays in Secrets Manager (a CloudFormation dynamic reference).
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, SecretValue, Stack
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from infra.config import CompanyIdentityProvider
from modelgate.approval.settings import SignInSettings

FEDERATED_GROUPS_ATTRIBUTE = "groups"  # custom attribute -> ID token claim `custom:groups`


class ApproverSignIn(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        groups: Sequence[str],
        domain_prefix: str,
        callback_url: str,
        company: CompanyIdentityProvider | None = None,
    ) -> None:
        """`groups`: the approvers groups of the environment's models (each created once, in order; the first,
        the environment's own, keeps the id earlier releases gave the one group, so its members stay)."""
        super().__init__(scope, construct_id)
        self.federated = company is not None
        self.user_pool = cognito.UserPool(
            self,
            "Pool",
            self_sign_up_enabled=False,  # approvers are invited or federated, never self-registered
            sign_in_aliases=cognito.SignInAliases(email=True, username=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(sms=False, otp=True),
            password_policy=cognito.PasswordPolicy(
                min_length=14,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            deletion_protection=True,
            removal_policy=RemovalPolicy.RETAIN,  # the people and their group memberships
            custom_attributes={FEDERATED_GROUPS_ATTRIBUTE: cognito.StringAttribute(max_len=2048, mutable=True)},
        )
        providers = [cognito.UserPoolClientIdentityProvider.COGNITO]
        federation = None
        if company is not None:
            federation = cognito.UserPoolIdentityProviderOidc(
                self,
                "Company",
                user_pool=self.user_pool,
                name=company.name,
                issuer_url=company.issuer,
                client_id=company.client_id,
                client_secret=SecretValue.secrets_manager(company.client_secret_name).unsafe_unwrap(),
                scopes=["openid", "email", "profile"],
                attribute_mapping=cognito.AttributeMapping(
                    email=cognito.ProviderAttribute.other("email"),
                    custom={
                        # without it Cognito marks federated e-mails unverified, and nobody federated may decide
                        "email_verified": cognito.ProviderAttribute.other("email_verified"),
                        f"custom:{FEDERATED_GROUPS_ATTRIBUTE}": cognito.ProviderAttribute.other(company.groups_claim),
                    },
                ),
            )
            providers.append(cognito.UserPoolClientIdentityProvider.custom(company.name))
        for index, group in enumerate(dict.fromkeys(groups)):
            cognito.CfnUserPoolGroup(
                self,
                "Approvers" if index == 0 else f"Approvers-{group}",
                user_pool_id=self.user_pool.user_pool_id,
                group_name=group,
                description="May approve or reject model versions in this environment (the models naming it)",
            )
        self.domain = self.user_pool.add_domain(
            "Domain", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=domain_prefix)
        )
        self.client = self.user_pool.add_client(
            "ApprovalApi",
            generate_secret=False,  # PKCE instead of a client secret
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE],
                callback_urls=[callback_url],
            ),
            id_token_validity=Duration.hours(1),  # an approval session lasts at most one hour
            access_token_validity=Duration.hours(1),
            prevent_user_existence_errors=True,
            supported_identity_providers=providers,
            read_attributes=cognito.ClientAttributes()
            .with_standard_attributes(email=True, email_verified=True)
            .with_custom_attributes(FEDERATED_GROUPS_ATTRIBUTE),
            # Who may decide rests on `email` and the groups. Users never get a token of this client that can
            # change them: no SRP/password sign-in (whose access tokens carry aws.cognito.signin.user.admin,
            # i.e. UpdateUserAttributes) and no such OAuth scope; only the hosted UI's code flow.
            auth_flows=cognito.AuthFlow(user_srp=False),
            write_attributes=self._write_attributes(),
        )
        if federation is not None:
            self.client.node.add_dependency(federation)

    def _write_attributes(self) -> cognito.ClientAttributes:
        """Nothing that identifies a person, or their groups. With federation Cognito itself must write the
        mapped attributes on each sign-in, and it requires them writable by the client (the tokens still can't)."""
        if self.federated:
            return (
                cognito.ClientAttributes()
                .with_standard_attributes(email=True, email_verified=True)
                .with_custom_attributes(FEDERATED_GROUPS_ATTRIBUTE)
            )
        return cognito.ClientAttributes().with_standard_attributes(fullname=True)

    def settings(self) -> SignInSettings:
        region = Stack.of(self).region
        issuer = f"https://cognito-idp.{region}.amazonaws.com/{self.user_pool.user_pool_id}"
        base = self.domain.base_url()
        return SignInSettings(
            issuer=issuer,
            jwks_url=f"{issuer}/.well-known/jwks.json",
            authorize_url=f"{base}/oauth2/authorize",
            token_url=f"{base}/oauth2/token",
            client_id=self.client.user_pool_client_id,
            groups_claim=f"cognito:groups,custom:{FEDERATED_GROUPS_ATTRIBUTE}" if self.federated else "cognito:groups",
        )
