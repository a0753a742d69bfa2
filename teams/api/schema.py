"""OpenAPI descriptions of Modelport's authentication classes (drf-spectacular extensions)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "teams.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "An API token from POST /api/v1/tokens/ (mpt_…)."}


class TokenBasicScheme(OpenApiAuthenticationExtension):
    target_class = "teams.authentication.TokenBasicAuthentication"
    name = "basicAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "basic",
                "description": "Accepted only by POST /api/v1/tokens/."}
